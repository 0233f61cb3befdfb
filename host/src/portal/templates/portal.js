// LeanSync Voice portal: copy buttons. Everything works without it.
document.addEventListener("click", function (ev) {
  var btn = ev.target.closest("[data-copy]");
  if (!btn) return;
  var el = document.getElementById(btn.getAttribute("data-copy"));
  if (!el) return;
  var text = el.textContent.trim();
  var done = function () {
    var old = btn.textContent;
    btn.textContent = btn.getAttribute("data-copied") || "Copied";
    setTimeout(function () { btn.textContent = old; }, 2000);
  };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, function () { select(el); });
  } else {
    select(el);
    try { document.execCommand("copy"); done(); } catch (e) { /* selected for manual copy */ }
  }
});
function select(el) {
  var r = document.createRange();
  r.selectNodeContents(el);
  var s = window.getSelection();
  s.removeAllRanges();
  s.addRange(r);
}
