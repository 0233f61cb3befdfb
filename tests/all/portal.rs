//! The admin portal through the binary: the whole customer journey in a
//! headless Chromium (fantoccini + chromedriver) with a screenshot of each
//! step in `target/portal-screenshots/`; tenant isolation by URL and hidden
//! form fields; CSRF refusal; session cookie flags and the sign-in lock-out.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use leansync_tests::host::{Host, Tenant, eventually, free_port};
use leansync_tests::plugins::repo_root;
use leansync_tests::receiver::Receiver;
use serde_json::{Value, json};

const OP_EMAIL: &str = "ops@leansync.test";
const OP_PASSWORD: &str = "operator-password-1";
const ADMIN_PASSWORD: &str = "customer-admin-pw-1";

/// Sets the portal password of the bootstrapped operator through the API.
async fn operator_password(h: &Host) {
    let me = h.op("GET", "/api/v1/me", None).await;
    let id = me["id"].as_str().unwrap();
    h.op(
        "PUT",
        &format!("/api/v1/accounts/{id}/password"),
        Some(json!({ "password": OP_PASSWORD })),
    )
    .await;
}

// ---- browser ----------------------------------------------------------------

/// chromedriver on a free port and a headless Chromium session.
struct Browser {
    client: Client,
    driver: Child,
    base: String,
    shots: PathBuf,
    step: u32,
    /// Chromium's temporary files (it leaves scoped dirs behind in /tmp).
    _tmp: tempfile::TempDir,
}

impl Browser {
    async fn start(base: &str) -> Browser {
        for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
            assert!(
                std::path::Path::new(bin).exists(),
                "{bin} missing: run scripts/test-deps.sh (apt-get install chromium chromium-driver)"
            );
        }
        let port = free_port();
        let tmp = tempfile::tempdir().unwrap();
        let driver = Command::new("/usr/bin/chromedriver")
            .arg(format!("--port={port}"))
            .env("TMPDIR", tmp.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let url = format!("http://127.0.0.1:{port}");
        let until = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < until, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                         "--window-size=1280,1000", "--lang=en-US", "--no-first-run"]
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&url)
            .await
            .expect("WebDriver session with headless Chromium");
        let shots = repo_root().join("target/portal-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            client,
            driver,
            base: base.to_owned(),
            shots,
            step: 0,
            _tmp: tmp,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("goto {path}: {e}"));
    }

    async fn path(&self) -> String {
        let u = self.client.current_url().await.unwrap();
        u.path().to_owned()
    }

    async fn html(&self) -> String {
        self.client.source().await.unwrap()
    }

    async fn fill(&self, css: &str, text: &str) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.clear().await.unwrap();
        e.send_keys(text).await.unwrap();
    }

    /// Clicks and waits until the next page has loaded.
    async fn click(&self, css: &str) {
        self.client
            .execute("window.__lsOld = true; return true;", vec![])
            .await
            .unwrap();
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"));
        e.click().await.unwrap();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let loaded = self
                .client
                .execute(
                    "return window.__lsOld === undefined && document.readyState === 'complete';",
                    vec![],
                )
                .await
                .map(|v| v == json!(true))
                .unwrap_or(false);
            if loaded {
                return;
            }
            assert!(Instant::now() < until, "no page load after clicking {css}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no {css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    /// Saves a PNG of the viewport as `NN-name.png`.
    async fn shot(&mut self, name: &str) {
        self.step += 1;
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "screenshot is not a PNG");
        std::fs::write(self.shots.join(format!("{:02}-{name}.png", self.step)), png).unwrap();
    }

    /// How many pixels the page is wider than the window (0: no
    /// horizontal scrolling).
    async fn overflow(&self) -> i64 {
        self.client
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap()
            .as_i64()
            .unwrap()
    }

    async fn login(&self, email: &str, password: &str) {
        self.goto("/portal/login").await;
        self.fill("#email", email).await;
        self.fill("#password", password).await;
        self.click("#sign-in").await;
        assert!(
            !self.path().await.ends_with("/login"),
            "sign-in as {email} failed:\n{}",
            self.html().await
        );
    }

    async fn logout(&self) {
        self.click("#logout").await;
        assert_eq!(self.path().await, "/portal/login");
    }

    async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn customer_journey_in_a_browser() {
    let h = Host::start("").await;
    operator_password(&h).await;
    let receiver = Receiver::start().await;
    let mut b = Browser::start(&h.url).await;

    // `/` leads to the portal's sign-in page.
    b.goto("/").await;
    assert_eq!(b.path().await, "/portal/login");
    b.shot("sign-in").await;

    // Operator signs in, creates the customer and its admin.
    b.login(OP_EMAIL, OP_PASSWORD).await;
    assert_eq!(b.path().await, "/portal/customers");
    assert!(b.html().await.contains("No customers yet"));
    b.shot("operator-customers-empty").await;
    b.fill("#name", "Muster AG").await;
    b.click("#new-customer button[type=submit]").await;
    let path = b.path().await;
    let cid = path
        .strip_prefix("/portal/c/")
        .and_then(|p| p.strip_suffix('/'))
        .unwrap_or_else(|| panic!("not on the customer page: {path}"))
        .to_owned();
    assert!(b.html().await.contains("Muster AG"));
    b.shot("operator-customer-created").await;
    // Blocking needs a reason, asked for next to the field.
    b.click("#block button[type=submit]").await;
    assert!(b.text("#err-reason").await.contains("reason"));
    b.shot("operator-block-needs-reason").await;
    b.fill("#reason", "unpaid invoices").await;
    b.click("#block button[type=submit]").await;
    assert!(b.text(".banner.error").await.contains("unpaid invoices"));
    b.shot("operator-customer-blocked").await;
    b.click("#block button[type=submit]").await;
    assert!(b.html().await.contains("Customer unblocked"));

    b.goto(&format!("/portal/c/{cid}/accounts")).await;
    b.fill("#email", "anna@muster.test").await;
    b.fill("#password", ADMIN_PASSWORD).await;
    b.click("#new-admin button[type=submit]").await;
    let token = b.text("#secret-value").await;
    assert!(token.starts_with("lsa"), "API token shown once: {token}");
    b.shot("operator-admin-created-token-once").await;
    // Telephony account: a simulated PBX, numbers in its settings, made by
    // the operator (it is served by the host's own telephony).
    b.goto(&format!("/portal/c/{cid}/telephony")).await;
    b.fill("#numbers", "044 123 45 67\n044 123 45 68").await;
    b.fill("#secret", "pbx-password-123").await;
    b.click("#new-telephony button[type=submit]").await;
    assert!(b.html().await.contains("No consent"));
    b.logout().await;

    // The customer admin signs in and lands on the own customer.
    b.login("anna@muster.test", ADMIN_PASSWORD).await;
    assert_eq!(b.path().await, format!("/portal/c/{cid}/"));
    b.shot("admin-overview").await;

    // The operator made the telephony account (a simulated PBX); the
    // admin sees it waiting for consent, and cannot make a simulated one.
    b.goto(&format!("/portal/c/{cid}/telephony")).await;
    let html = b.html().await;
    assert!(html.contains("No consent"), "{html}");
    assert!(!html.contains("pbx-password-123"), "PBX secret shown again");
    assert!(
        !html.contains(r#"value="sim""#),
        "the simulator is offered to a customer admin"
    );
    b.shot("telephony-account-connected").await;

    // Consent: says what is read, needs the checkbox.
    b.click("#telephony-accounts a.button").await;
    let html = b.html().await;
    assert!(html.contains("the phone numbers of the account"), "{html}");
    assert!(html.contains("044 123 45 67") && html.contains("044 123 45 68"));
    b.shot("consent-page").await;
    b.click("#give-consent").await;
    assert!(
        b.text("#err-confirm").await.contains("Tick the box"),
        "missing checkbox must be explained next to it"
    );
    b.client
        .find(Locator::Css("#confirm"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.click("#give-consent").await;
    assert!(b.path().await.ends_with("/import"), "{}", b.path().await);
    b.shot("consent-given-import").await;

    // Import → numbers in E.164 and national form.
    b.click("#import").await;
    assert_eq!(b.path().await, format!("/portal/c/{cid}/numbers"));
    let html = b.html().await;
    for n in [
        "+41441234567",
        "044 123 45 67",
        "+41441234568",
        "044 123 45 68",
    ] {
        assert!(html.contains(n), "{n} missing on the numbers page");
    }
    b.shot("numbers-imported").await;

    // Webhook connector through the form generated from its schema.
    b.goto(&format!("/portal/c/{cid}/apps")).await;
    b.click("#enable-webhook").await;
    let html = b.html().await;
    assert!(html.contains("Receiver URL") && html.contains("Signing secret"));
    assert!(
        html.contains(r#"type="password""#),
        "x-secret as a password input"
    );
    b.shot("webhook-form-generated").await;
    // Required field left empty: the error appears next to it.
    b.fill("#f-secret", "whsec-portal").await;
    b.click("#enable").await;
    assert!(b.text("#err-url").await.contains("required"));
    assert!(
        !b.html().await.contains("whsec-portal"),
        "secret filled in again"
    );
    b.shot("webhook-form-error-next-to-field").await;
    b.fill("#f-url", &format!("{}/calls", receiver.url())).await;
    b.fill("#f-secret", "whsec-portal").await;
    b.fill("#granted_hosts", "127.0.0.1").await;
    b.click("#enable").await;
    assert_eq!(b.path().await, format!("/portal/c/{cid}/apps"));
    let html = b.html().await;
    assert!(html.contains("Business application enabled"), "{html}");
    assert!(!html.contains("whsec-portal"), "secret shown after saving");
    b.shot("webhook-enabled").await;

    // Order a license.
    b.goto(&format!("/portal/c/{cid}/licenses")).await;
    b.fill("#count", "1").await;
    b.click("#order").await;
    let html = b.html().await;
    assert!(html.contains("waiting for an operator"), "{html}");
    b.shot("license-ordered").await;
    b.logout().await;

    // The operator provisions it in the portal; the key is shown once.
    b.login(OP_EMAIL, OP_PASSWORD).await;
    b.goto(&format!("/portal/c/{cid}/licenses")).await;
    b.shot("operator-sees-ordered-license").await;
    b.click("button.provision").await;
    let provisioned_key = b.text("#secret-value").await;
    assert!(provisioned_key.starts_with("lsk"), "{provisioned_key}");
    b.shot("operator-provisioned-key-once").await;
    // Price list: a bad amount is explained next to its field.
    b.goto("/portal/prices").await;
    b.fill("#connector", "webhook").await;
    b.fill("#monthly_chf", "nine").await;
    b.click("#price-form button[type=submit]").await;
    assert!(b.text("#err-monthly_chf").await.contains("nine"));
    b.shot("operator-price-error").await;
    b.fill("#monthly_chf", "9.50").await;
    b.click("#price-form button[type=submit]").await;
    assert!(b.text("#prices").await.contains("9.50"));
    b.shot("operator-price-list").await;
    b.goto("/portal/plugins").await;
    assert!(b.html().await.contains("webhook"));
    b.shot("operator-plugins").await;
    b.goto("/portal/health").await;
    assert!(b.html().await.contains("Ready"));
    b.shot("operator-health").await;
    b.logout().await;

    // The customer admin assigns it to a number and rotates the key.
    b.login("anna@muster.test", ADMIN_PASSWORD).await;
    b.goto(&format!("/portal/c/{cid}/licenses")).await;
    b.click("form.assign button[type=submit]").await;
    let html = b.html().await;
    assert!(html.contains("License assigned"), "{html}");
    b.shot("license-assigned").await;
    b.goto(&format!("/portal/c/{cid}/keys")).await;
    b.click("button.rotate").await;
    let html = b.html().await;
    assert!(html.contains("shown only this once"), "warning missing");
    let key = b.text("#secret-value").await;
    assert!(key.starts_with("lsk") && key != provisioned_key, "{key}");
    b.shot("key-rotated-shown-once").await;
    b.click("#continue").await;
    let html = b.html().await;
    assert!(
        !html.contains(&key),
        "the key is shown again on the keys page"
    );
    b.shot("keys-masked").await;

    // A simulated call on the licensed number reaches the webhook, and the
    // key read from the page opens the event stream.
    let mut sse = h.sse(&key).await;
    let call = h
        .op(
            "POST",
            "/api/v1/sim/calls",
            Some(json!({ "to": "044 123 45 67", "from": "079 555 12 34", "answer_after": 0.2, "hangup_after": 0.3 })),
        )
        .await["call_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let states = eventually(Duration::from_secs(10), || {
        let s: Vec<String> = receiver
            .events()
            .iter()
            .filter(|e| e["call_id"] == call.as_str())
            .map(|e| e["state"].as_str().unwrap_or_default().to_owned())
            .collect();
        (s.len() >= 3).then_some(s)
    })
    .await
    .expect("the call reaches the webhook");
    assert_eq!(states, ["ringing", "answered", "ended"]);
    let ev = sse
        .next(Duration::from_secs(5))
        .await
        .expect("event on the key's stream");
    assert_eq!(ev["call_id"], call.as_str());

    // The usage report shows the assignment; CSV and billing are there.
    b.goto(&format!("/portal/c/{cid}/usage")).await;
    let html = b.html().await;
    assert!(html.contains("+41441234567"), "{html}");
    assert!(html.contains("usage.csv"));
    b.shot("usage-report").await;
    b.goto(&format!("/portal/c/{cid}/billing")).await;
    assert!(b.html().await.contains("CHF"));
    b.shot("billing-preview").await;
    b.goto(&format!("/portal/c/{cid}/deliveries")).await;
    assert!(
        b.html().await.contains(&call),
        "delivery of the call listed"
    );
    b.shot("deliveries").await;
    b.goto(&format!("/portal/c/{cid}/audit?action=key.rotate"))
        .await;
    let html = b.html().await;
    assert!(html.contains("key.rotate") && !html.contains("<code>license.order</code>"));
    b.shot("audit-filtered").await;

    // German is available.
    b.goto(&format!("/portal/c/{cid}/keys?lang=de")).await;
    assert!(b.html().await.contains("Neuen Key erzeugen"));
    b.shot("keys-german").await;
    b.goto(&format!("/portal/c/{cid}/keys?lang=en")).await;

    // Revoke the key in the portal: the next call reaches nothing.
    b.click("button.revoke").await;
    assert!(b.html().await.contains("Key revoked"));
    b.shot("key-revoked").await;
    assert!(
        sse.closed_within(Duration::from_secs(2)).await.is_some(),
        "the revoked key's stream stays open"
    );
    let before = receiver.received().len();
    h.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": "044 123 45 67", "from": "079 555 12 34", "answer_after": 0.2, "hangup_after": 0.3 })),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        receiver.received().len(),
        before,
        "a call after revocation reached the webhook"
    );

    // No horizontal scrolling at 1280 px and 390 px.
    for (w, hgt) in [(1280, 1000), (390, 844)] {
        b.client.set_window_size(w, hgt).await.unwrap();
        for page in ["licenses", "keys", "numbers", "usage", "audit", "apps"] {
            b.goto(&format!("/portal/c/{cid}/{page}")).await;
            assert!(
                b.overflow().await <= 0,
                "{page} scrolls horizontally at {w} px"
            );
        }
    }
    b.goto(&format!("/portal/c/{cid}/licenses")).await;
    b.client
        .execute(
            "document.getElementById('licenses').scrollIntoView(); return true;",
            vec![],
        )
        .await
        .unwrap();
    b.shot("licenses-390px").await;
    b.goto(&format!("/portal/c/{cid}/numbers?lang=de")).await;
    b.shot("numbers-390px-german").await;
    b.close().await;
}

// ---- plain HTTP client with cookies ---------------------------------------------

/// A portal session over plain HTTP (no redirects followed).
struct Web {
    base: String,
    client: reqwest::Client,
    cookies: HashMap<String, String>,
}

fn hidden_csrf(html: &str) -> Option<String> {
    let at = html.find(r#"name="csrf" value=""#)? + r#"name="csrf" value=""#.len();
    Some(html[at..].split('"').next()?.to_owned())
}

impl Web {
    fn new(base: &str) -> Web {
        Web::from_source(base, "127.0.0.1")
    }

    /// A client whose requests come from loopback address `ip` (any of
    /// 127.0.0.0/8), so the host sees a different source.
    fn from_source(base: &str, ip: &str) -> Web {
        Web {
            base: base.to_owned(),
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .local_address(ip.parse::<std::net::IpAddr>().unwrap())
                .build()
                .unwrap(),
            cookies: HashMap::new(),
        }
    }

    fn keep(&mut self, resp: &reqwest::Response) -> Vec<String> {
        let mut raw = Vec::new();
        for v in resp.headers().get_all("set-cookie") {
            let s = v.to_str().unwrap().to_owned();
            if let Some((kv, _)) = s.split_once(';')
                && let Some((k, val)) = kv.split_once('=')
            {
                if val.is_empty() {
                    self.cookies.remove(k);
                } else {
                    self.cookies.insert(k.to_owned(), val.to_owned());
                }
            }
            raw.push(s);
        }
        raw
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn get(&mut self, path: &str) -> (u16, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.keep(&resp);
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    async fn post_raw(
        &mut self,
        path: &str,
        fields: &[(&str, &str)],
        extra: &[(&str, &str)],
    ) -> (u16, String, Vec<String>) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .form(fields);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.unwrap();
        let set = self.keep(&resp);
        (resp.status().as_u16(), resp.text().await.unwrap(), set)
    }

    /// Posts with the session's CSRF token (read from a portal page).
    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> (u16, String) {
        let (_, page) = self.get("/portal/password").await;
        let token = hidden_csrf(&page).expect("CSRF token on the page");
        let mut all = fields.to_vec();
        all.push(("csrf", &token));
        let (s, b, _) = self.post_raw(path, &all, &[]).await;
        (s, b)
    }

    async fn login(&mut self, email: &str, password: &str) -> (u16, Vec<String>) {
        self.login_with(email, password, &[]).await
    }

    /// Signs in and returns the status and the page answered.
    async fn login_page(&mut self, email: &str, password: &str) -> (u16, String) {
        let (s, page) = self.get("/portal/login").await;
        assert_eq!(s, 200);
        let token = hidden_csrf(&page).unwrap();
        let (s, body, _) = self
            .post_raw(
                "/portal/login",
                &[("email", email), ("password", password), ("csrf", &token)],
                &[],
            )
            .await;
        (s, body)
    }

    async fn login_with(
        &mut self,
        email: &str,
        password: &str,
        headers: &[(&str, &str)],
    ) -> (u16, Vec<String>) {
        let (s, page) = self.get("/portal/login").await;
        assert_eq!(s, 200);
        let token = hidden_csrf(&page).unwrap();
        let (s, _, set) = self
            .post_raw(
                "/portal/login",
                &[("email", email), ("password", password), ("csrf", &token)],
                headers,
            )
            .await;
        (s, set)
    }
}

/// A customer with an admin who has a portal password (through the API).
async fn customer_with_admin(h: &Host, name: &str, email: &str) -> String {
    let c = h
        .op("POST", "/api/v1/customers", Some(json!({ "name": name })))
        .await;
    let cid = c["id"].as_str().unwrap().to_owned();
    let a = h
        .op(
            "POST",
            &format!("/api/v1/customers/{cid}/accounts"),
            Some(json!({ "email": email })),
        )
        .await;
    let id = a["account"]["id"].as_str().unwrap();
    h.op(
        "PUT",
        &format!("/api/v1/accounts/{id}/password"),
        Some(json!({ "password": ADMIN_PASSWORD })),
    )
    .await;
    cid
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_admin_cannot_reach_another_customers_pages_or_data() {
    let h = Host::start("").await;
    let r = Receiver::start().await;
    let beta = Tenant::create(
        &h,
        "Beta GmbH",
        &["044 222 22 22"],
        &format!("{}/b", r.url()),
    )
    .await;
    let alpha = customer_with_admin(&h, "Alpha AG", "admin@alpha.test").await;
    let mut web = Web::new(&h.url);
    let (s, _) = web.login("admin@alpha.test", ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    let (s, own) = web.get(&format!("/portal/c/{alpha}/")).await;
    assert_eq!(s, 200);
    assert!(own.contains("Alpha AG"));
    let (s, csv) = web.get(&format!("/portal/c/{alpha}/usage.csv")).await;
    assert_eq!(s, 200);
    assert!(csv.starts_with("customer,installation,connector"), "{csv}");

    let foreign = [
        beta.customer.as_str(),
        "Beta GmbH",
        beta.license.as_str(),
        beta.installation.as_str(),
        beta.telephony.as_str(),
        beta.key_id.as_str(),
        "+41442222222",
        "044 222 22 22",
    ];
    let clean = |what: &str, body: &str| {
        for f in foreign {
            assert!(!body.contains(f), "{what} shows {f}:\n{body}");
        }
    };

    // Beta's pages, by editing the URL.
    let c = &beta.customer;
    let pages = [
        format!("/portal/c/{c}/"),
        format!("/portal/c/{c}/accounts"),
        format!("/portal/c/{c}/telephony"),
        format!("/portal/c/{c}/telephony/{}/consent", beta.telephony),
        format!("/portal/c/{c}/telephony/{}/import", beta.telephony),
        format!("/portal/c/{c}/numbers"),
        format!("/portal/c/{c}/apps"),
        format!("/portal/c/{c}/apps/new/webhook"),
        format!("/portal/c/{c}/licenses"),
        format!("/portal/c/{c}/keys"),
        format!("/portal/c/{c}/usage"),
        format!("/portal/c/{c}/usage.csv"),
        format!("/portal/c/{c}/billing"),
        format!("/portal/c/{c}/billing.csv"),
        format!("/portal/c/{c}/audit"),
        format!("/portal/c/{c}/deliveries"),
        // Beta's objects under Alpha's own pages.
        format!("/portal/c/{alpha}/telephony/{}/consent", beta.telephony),
        format!("/portal/c/{alpha}/telephony/{}/import", beta.telephony),
    ];
    for p in &pages {
        let (s, body) = web.get(p).await;
        assert!(s == 404 || s == 403, "GET {p} -> {s}");
        clean(p, &body);
    }
    // Operator pages.
    for p in [
        "/portal/customers",
        "/portal/prices",
        "/portal/audit",
        "/portal/plugins",
        "/portal/health",
        "/portal/dead-letters",
    ] {
        let (s, body) = web.get(p).await;
        assert_eq!(s, 403, "GET {p}");
        clean(p, &body);
    }

    // Actions on Beta's objects, by URL or hidden form field.
    let a = &alpha;
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            format!("/portal/c/{a}/licenses"),
            vec![("installation", &beta.installation), ("count", "1")],
        ),
        (
            format!("/portal/c/{c}/licenses"),
            vec![("installation", &beta.installation), ("count", "1")],
        ),
        (
            format!("/portal/c/{a}/licenses/{}/assign", beta.license),
            vec![("number", "044 222 22 22")],
        ),
        (
            format!("/portal/c/{a}/licenses/{}/rotate", beta.license),
            vec![],
        ),
        (
            format!("/portal/c/{a}/licenses/{}/cancel", beta.license),
            vec![],
        ),
        (
            format!("/portal/c/{c}/licenses/{}/cancel", beta.license),
            vec![],
        ),
        (format!("/portal/c/{a}/keys/{}/revoke", beta.key_id), vec![]),
        (format!("/portal/c/{c}/keys/{}/revoke", beta.key_id), vec![]),
        (
            format!("/portal/c/{a}/telephony/{}/revoke", beta.telephony),
            vec![],
        ),
        (
            format!("/portal/c/{a}/telephony/{}/import", beta.telephony),
            vec![("number", "044 222 22 22")],
        ),
        (
            format!("/portal/c/{c}/accounts"),
            vec![
                ("email", "intruder@alpha.test"),
                ("password", "intruder-password"),
            ],
        ),
        (
            format!("/portal/c/{c}/apps/new/webhook"),
            vec![
                ("cfg.url", "http://127.0.0.1:1/x"),
                ("granted_hosts", "127.0.0.1"),
            ],
        ),
        ("/portal/customers".to_string(), vec![("name", "Gamma")]),
        (
            format!("/portal/customers/{c}/block"),
            vec![("reason", "intruder")],
        ),
    ];
    for (p, fields) in &posts {
        let (s, body) = web.post(p, fields).await;
        assert!(s == 404 || s == 403, "POST {p} -> {s}:\n{body}");
        clean(p, &body);
    }

    // Nothing of Beta changed.
    let lic = h
        .op("GET", &format!("/api/v1/licenses/{}", beta.license), None)
        .await;
    assert_eq!(lic["state"], "provisioned");
    assert_eq!(lic["number"], "+41442222222");
    assert_eq!(lic["keys"].as_array().unwrap().len(), 1);
    assert_eq!(lic["keys"][0]["revoked"], false);
    let all = h
        .op("GET", &format!("/api/v1/customers/{c}/licenses"), None)
        .await;
    assert_eq!(
        all.as_array().unwrap().len(),
        1,
        "a license was ordered for Beta"
    );
    let tel = h
        .op(
            "GET",
            &format!("/api/v1/telephony-accounts/{}", beta.telephony),
            None,
        )
        .await;
    assert!(tel["consent"].is_object(), "Beta's consent was revoked");
    let accounts = h
        .op("GET", &format!("/api/v1/customers/{c}/accounts"), None)
        .await;
    assert!(!accounts.to_string().contains("intruder"));
    let customers = h.op("GET", "/api/v1/customers", None).await;
    assert!(!customers.to_string().contains("Gamma"));
    assert!(customers.to_string().contains("Beta GmbH"));
    let cust = h.op("GET", &format!("/api/v1/customers/{c}"), None).await;
    assert!(cust["blocked_reason"].is_null());
    let installs = h
        .op("GET", &format!("/api/v1/customers/{c}/installations"), None)
        .await;
    assert_eq!(installs.as_array().unwrap().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn forms_without_a_valid_csrf_token_are_refused_and_change_nothing() {
    let h = Host::start("").await;
    operator_password(&h).await;
    let mut web = Web::new(&h.url);
    let (s, set) = web.login(OP_EMAIL, OP_PASSWORD).await;
    assert_eq!(s, 303);
    let session = set
        .iter()
        .find(|c| c.starts_with("ls_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Lax"), "{session}");
    assert!(!session.contains("Secure"), "{session}");
    let id = session["ls_session=".len()..].split(';').next().unwrap();
    assert_eq!(id.len(), 64, "256-bit session id");

    let mut other = Web::new(&h.url);
    other.login(OP_EMAIL, OP_PASSWORD).await;
    let (_, page) = other.get("/portal/customers").await;
    let foreign_token = hidden_csrf(&page).unwrap();

    let (_, page) = web.get("/portal/customers").await;
    let own_token = hidden_csrf(&page).unwrap();
    assert_ne!(own_token, foreign_token, "CSRF tokens are per session");
    for token in [
        None,
        Some(""),
        Some("0".repeat(64).as_str()),
        Some(foreign_token.as_str()),
    ] {
        let mut fields = vec![("name", "Evil Corp")];
        if let Some(t) = token {
            fields.push(("csrf", t));
        }
        let (s, body, _) = web.post_raw("/portal/customers", &fields, &[]).await;
        assert_eq!(s, 403, "token {token:?}");
        assert!(body.contains("Form expired"), "{body}");
        assert!(body.contains("nothing was changed"), "{body}");
    }
    // Block without a token: refused too.
    let c = h
        .op(
            "POST",
            "/api/v1/customers",
            Some(json!({ "name": "Victim AG" })),
        )
        .await;
    let cid = c["id"].as_str().unwrap();
    let (s, _, _) = web
        .post_raw(
            &format!("/portal/customers/{cid}/block"),
            &[("reason", "csrf")],
            &[],
        )
        .await;
    assert_eq!(s, 403);
    let customers = h.op("GET", "/api/v1/customers", None).await;
    assert!(!customers.to_string().contains("Evil Corp"), "{customers}");
    assert!(customers[0]["blocked_reason"].is_null(), "{customers}");

    // The right token works (the check is not simply refusing everything).
    let (s, _, _) = web
        .post_raw(
            "/portal/customers",
            &[("name", "Good AG"), ("csrf", &own_token)],
            &[],
        )
        .await;
    assert_eq!(s, 303);
    let customers = h.op("GET", "/api/v1/customers", None).await;
    assert!(customers.to_string().contains("Good AG"));

    // Names are escaped in the HTML.
    let (s, _) = web
        .post(
            "/portal/customers",
            &[("name", "<img src=x onerror=alert(1)>")],
        )
        .await;
    assert_eq!(s, 303);
    let (_, page) = web.get("/portal/customers").await;
    assert!(!page.contains("<img src=x"), "unescaped name");
    assert!(page.contains("&lt;img src=x"), "{page}");

    // The sign-in form has its own token: without it, 403.
    let mut fresh = Web::new(&h.url);
    let (s, _, _) = fresh
        .post_raw(
            "/portal/login",
            &[("email", OP_EMAIL), ("password", OP_PASSWORD)],
            &[],
        )
        .await;
    assert_eq!(s, 403);
    assert!(!fresh.cookies.contains_key("ls_session"));

    // Behind a TLS proxy the session cookie is Secure.
    let mut tls = Web::new(&h.url);
    let (s, set) = tls
        .login_with(OP_EMAIL, OP_PASSWORD, &[("x-forwarded-proto", "https")])
        .await;
    assert_eq!(s, 303);
    assert!(
        set.iter()
            .any(|c| c.starts_with("ls_session=") && c.contains("; Secure")),
        "{set:?}"
    );

    // Logout ends the session.
    let (s, _) = web.post("/portal/logout", &[]).await;
    assert_eq!(s, 303);
    web.cookies.insert("ls_session".into(), id.to_owned());
    let (s, _) = web.get("/portal/customers").await;
    assert_eq!(s, 303, "a signed-out session still works");
}

#[tokio::test(flavor = "multi_thread")]
async fn five_failed_sign_ins_lock_the_email_for_a_while() {
    let h = Host::start("").await;
    operator_password(&h).await;
    let mut web = Web::new(&h.url);
    for i in 1..=5 {
        let (s, _) = web.login(OP_EMAIL, "wrong-password-x").await;
        assert!(s == 401 || (i == 5 && s == 429), "attempt {i}: {s}");
    }
    // Even the right password is refused now, with a clear message.
    let (s, body) = web.login_page(OP_EMAIL, OP_PASSWORD).await;
    assert_eq!(s, 429);
    assert!(body.contains("Wait 5 minutes"), "{body}");
    // Another e-mail is not affected.
    let c = customer_with_admin(&h, "Delta AG", "admin@delta.test").await;
    let (s, _) = web.login("admin@delta.test", ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    let (s, body) = web.get(&format!("/portal/c/{c}/")).await;
    assert_eq!(s, 200);
    assert!(body.contains("Delta AG"));
    assert!(!body.contains("Shared account"));

    // A shared (impersonal) account is flagged on every page.
    let a = h
        .op(
            "POST",
            &format!("/api/v1/customers/{c}/accounts"),
            Some(json!({ "email": "office@delta.test", "impersonal": true })),
        )
        .await;
    let id = a["account"]["id"].as_str().unwrap();
    h.op(
        "PUT",
        &format!("/api/v1/accounts/{id}/password"),
        Some(json!({ "password": ADMIN_PASSWORD })),
    )
    .await;
    let mut shared = Web::new(&h.url);
    let (s, _) = shared.login("office@delta.test", ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    for p in ["", "numbers", "accounts"] {
        let (s, body) = shared.get(&format!("/portal/c/{c}/{p}")).await;
        assert_eq!(s, 200);
        assert!(body.contains("Shared account"), "/{p} does not flag it");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_attacker_locks_out_only_their_own_source_not_the_owner() {
    let h = Host::start("").await;
    operator_password(&h).await;
    let mut attacker = Web::from_source(&h.url, "127.0.0.2");
    let mut last = 0;
    for _ in 0..6 {
        last = attacker.login(OP_EMAIL, "wrong-password-x").await.0;
    }
    assert_eq!(last, 429, "the attacker's source is locked for that e-mail");
    // The owner, from another address, signs in at once.
    let mut owner = Web::from_source(&h.url, "127.0.0.3");
    assert_eq!(owner.login(OP_EMAIL, OP_PASSWORD).await.0, 303);
    // Spraying many e-mails from one source locks that source for all.
    let mut sprayer = Web::from_source(&h.url, "127.0.0.4");
    let mut statuses = Vec::new();
    for i in 0..21 {
        statuses.push(
            sprayer
                .login(&format!("user{i}@x.test"), "guess-123456")
                .await
                .0,
        );
    }
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    let (s, body) = sprayer.login_page(OP_EMAIL, OP_PASSWORD).await;
    assert_eq!(s, 429);
    assert!(
        body.contains("from your network. Wait 15 minutes"),
        "{body}"
    );
    assert_eq!(
        Web::from_source(&h.url, "127.0.0.5")
            .login(OP_EMAIL, OP_PASSWORD)
            .await
            .0,
        303
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_password_change_ends_the_other_sessions() {
    let h = Host::start("").await;
    operator_password(&h).await;
    let mut laptop = Web::new(&h.url);
    let mut phone = Web::new(&h.url);
    assert_eq!(laptop.login(OP_EMAIL, OP_PASSWORD).await.0, 303);
    assert_eq!(phone.login(OP_EMAIL, OP_PASSWORD).await.0, 303);
    assert_eq!(phone.get("/portal/customers").await.0, 200);
    // A wrong current password changes nothing.
    let new = "a-brand-new-password-2";
    let (s, body) = laptop
        .post(
            "/portal/password",
            &[
                ("current", "not-it-at-all"),
                ("password", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(s, 422);
    assert!(body.contains("current password is wrong"), "{body}");
    assert_eq!(phone.get("/portal/customers").await.0, 200);
    let (s, _) = laptop
        .post(
            "/portal/password",
            &[
                ("current", OP_PASSWORD),
                ("password", new),
                ("confirm", new),
            ],
        )
        .await;
    assert_eq!(s, 303);
    assert_eq!(
        laptop.get("/portal/customers").await.0,
        200,
        "the changing session goes on"
    );
    assert_eq!(
        phone.get("/portal/customers").await.0,
        303,
        "the other session still works"
    );
    assert_eq!(phone.login(OP_EMAIL, OP_PASSWORD).await.0, 401);
    assert_eq!(phone.login(OP_EMAIL, new).await.0, 303);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_parallel_wrong_passwords_do_not_starve_the_host() {
    let h = Host::start("").await;
    operator_password(&h).await;
    // From 100 sources, so no throttle turns them away before Argon2.
    let mut attempts = Vec::new();
    for i in 0..100 {
        let url = h.url.clone();
        attempts.push(tokio::spawn(async move {
            let mut w = Web::from_source(&url, &format!("127.0.1.{}", i + 1));
            w.login(OP_EMAIL, "wrong-password-x").await.0
        }));
    }
    let client = reqwest::Client::new();
    let mut slowest = Duration::ZERO;
    while attempts.iter().any(|a| !a.is_finished()) {
        let t = Instant::now();
        let r = client
            .get(format!("{}/healthz", h.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "wrong passwords are refused or deferred, never accepted or failing: {statuses:?}"
    );
    assert!(statuses.contains(&401), "{statuses:?}");
    // Argon2 runs on a bounded pool of blocking threads: the async workers
    // keep answering. (Inline hashing queues /healthz behind ~100 hashes.)
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz took {slowest:?}"
    );
    assert_eq!(Web::new(&h.url).login(OP_EMAIL, OP_PASSWORD).await.0, 303);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_disabled_account_or_a_blocked_customer_ends_its_portal_session() {
    let h = Host::start("").await;
    let c = customer_with_admin(&h, "Echo AG", "admin@echo.test").await;
    let accounts = h
        .op("GET", &format!("/api/v1/customers/{c}/accounts"), None)
        .await;
    let id = accounts[0]["id"].as_str().unwrap().to_owned();
    let mut web = Web::new(&h.url);
    let (s, _) = web.login("admin@echo.test", ADMIN_PASSWORD).await;
    assert_eq!(s, 303);
    assert_eq!(web.get(&format!("/portal/c/{c}/")).await.0, 200);

    h.op(
        "POST",
        &format!("/api/v1/accounts/{id}/disable"),
        Some(json!({ "reason": "left the company" })),
    )
    .await;
    assert_eq!(
        web.get(&format!("/portal/c/{c}/")).await.0,
        303,
        "the session of a disabled account still works"
    );
    assert_eq!(web.login("admin@echo.test", ADMIN_PASSWORD).await.0, 401);

    h.op("POST", &format!("/api/v1/accounts/{id}/enable"), None)
        .await;
    assert_eq!(web.login("admin@echo.test", ADMIN_PASSWORD).await.0, 303);
    h.op(
        "POST",
        &format!("/api/v1/customers/{c}/block"),
        Some(json!({ "reason": "unpaid invoices" })),
    )
    .await;
    assert_eq!(
        web.get(&format!("/portal/c/{c}/")).await.0,
        303,
        "the session of a blocked customer's admin still works"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn operators_redrive_dead_letters_from_the_portal_customer_admins_cannot() {
    let h = Host::start("").await;
    operator_password(&h).await;
    let r = Receiver::start().await;
    let t = Tenant::create(&h, "Echo AG", &["044 333 33 33"], &format!("{}/e", r.url())).await;
    // The receiver refuses the first delivery for good (HTTP 400).
    r.script(&[(400, &[])]);
    h.op(
        "POST",
        "/api/v1/sim/calls",
        Some(json!({ "to": "044 333 33 33", "from": "079 555 12 34", "answer_after": 0.2, "hangup_after": 0.3 })),
    )
    .await;
    let mut dead_id = None;
    for _ in 0..100 {
        let dead = h.op("GET", "/api/v1/deliveries/dead", None).await;
        if let Some(d) = dead.as_array().unwrap().first() {
            dead_id = d["id"].as_i64();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let id = dead_id.expect("a dead letter").to_string();

    // The customer admin sees it but may not re-drive it.
    let accounts = h
        .op(
            "GET",
            &format!("/api/v1/customers/{}/accounts", t.customer),
            None,
        )
        .await;
    let acc = accounts[0]["id"].as_str().unwrap();
    h.op(
        "PUT",
        &format!("/api/v1/accounts/{acc}/password"),
        Some(json!({ "password": ADMIN_PASSWORD })),
    )
    .await;
    let mut admin = Web::new(&h.url);
    assert_eq!(
        admin
            .login(accounts[0]["email"].as_str().unwrap(), ADMIN_PASSWORD)
            .await
            .0,
        303
    );
    let (s, page) = admin
        .get(&format!("/portal/c/{}/deliveries", t.customer))
        .await;
    assert_eq!(s, 200);
    assert!(page.contains("HTTP 400"), "{page}");
    assert!(
        !page.contains("/redrive"),
        "re-drive offered to a customer admin"
    );
    let (s, _) = admin
        .post(
            &format!("/portal/c/{}/deliveries/{id}/redrive", t.customer),
            &[],
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = admin
        .post(&format!("/portal/deliveries/{id}/redrive"), &[])
        .await;
    assert_eq!(s, 403);

    // The operator re-drives it; it is delivered.
    let mut op = Web::new(&h.url);
    assert_eq!(op.login(OP_EMAIL, OP_PASSWORD).await.0, 303);
    let (s, page) = op.get("/portal/dead-letters").await;
    assert_eq!(s, 200);
    assert!(page.contains(&format!("/portal/deliveries/{id}/redrive")));
    let before = r.received().len();
    let (s, _) = op
        .post(&format!("/portal/deliveries/{id}/redrive"), &[])
        .await;
    assert_eq!(s, 303);
    let delivered = eventually(Duration::from_secs(10), || {
        (r.received().len() > before).then_some(())
    })
    .await;
    assert!(delivered.is_some(), "the re-driven delivery was not sent");
    let (_, page) = op.get("/portal/dead-letters").await;
    assert!(page.contains("No dead letters"), "{page}");
}

/// The screen-pop widget embedded in a business app page on another
/// origin: an incoming simulated call appears live; a phone number on the
/// page becomes a click-to-call link that places the call with the key.
#[tokio::test(flavor = "multi_thread")]
async fn widget_shows_incoming_calls_and_dials_numbers_on_the_page() {
    let h = Host::start("").await;
    let r = Receiver::start().await;
    let t = Tenant::create(
        &h,
        "Widget AG",
        &["044 123 45 67"],
        &format!("{}/w", r.url()),
    )
    .await;

    // The business app: its own origin, the widget included by script tag.
    let page = format!(
        "<!doctype html><html><body><h1>CRM contact</h1><p>Supplier hotline: 044 555 66 77</p><script src=\"{}/widget.js\" data-key=\"{}\"></script></body></html>",
        h.url, t.key
    );
    let app = axum::Router::new().route(
        "/crm",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut b = Browser::start(&app_url).await;
    b.goto("/crm").await;
    let live = async {
        for _ in 0..200 {
            if let Ok(e) = b
                .client
                .find(Locator::Css("#leansync-widget [data-status]"))
                .await
                && e.text().await.unwrap_or_default() == "live"
            {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    };
    assert!(live.await, "widget never connected:\n{}", b.html().await);
    // It connected with a ticket (its only way now); a ticket not made by
    // the service opens nothing.
    let (s, e) = h
        .call("GET", "/api/v1/events?ticket=lst_AAAAforged", None, None)
        .await;
    assert_eq!(
        (s, e["error"]["code"].as_str()),
        (401, Some("invalid_ticket")),
        "{e}"
    );

    // An incoming call appears on the page with its caller.
    h.op("POST", "/api/v1/sim/calls", Some(json!({ "to": "044 123 45 67", "from": "079 555 12 34", "answer_after": 0.5, "hangup_after": 0.5 }))).await;
    let mut shown = String::new();
    for _ in 0..200 {
        if let Ok(e) = b
            .client
            .find(Locator::Css("#leansync-widget [data-calls] li"))
            .await
        {
            shown = e.text().await.unwrap_or_default();
            if shown.contains("+41795551234") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        shown.contains("+41795551234"),
        "incoming call not shown: {shown:?}"
    );
    b.shot("widget-incoming-call").await;

    // The number in the page text is a link; clicking it places the call.
    let link = b
        .client
        .find(Locator::Css("a.leansync-call"))
        .await
        .expect("number turned into a link");
    assert_eq!(
        link.attr("href").await.unwrap().as_deref(),
        Some("tel:0445556677")
    );
    link.click().await.unwrap();
    let mut call_id = None;
    for _ in 0..200 {
        let l = b
            .client
            .find(Locator::Css("a.leansync-call"))
            .await
            .unwrap();
        if l.attr("data-state").await.unwrap().as_deref() == Some("placed") {
            call_id = l.attr("data-call-id").await.unwrap();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let call_id = call_id.expect("click-to-call not placed");
    b.shot("widget-call-placed").await;
    let mut state = Value::Null;
    for _ in 0..100 {
        let (s, v) = h
            .call(
                "GET",
                &format!("/api/v1/calls/{call_id}"),
                Some(&t.key),
                None,
            )
            .await;
        if s == 200 {
            state = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state["events"][0]["direction"], "outbound", "{state}");
    assert_eq!(state["events"][0]["callee"], "+41445556677", "{state}");
    b.close().await;
}

/// The widget's own guard, in a real browser: an event from a host that
/// does not drop unsafe links (an older one, or a connector gone wrong)
/// with a `javascript:` deep link shows the name as plain text, while an
/// `https:` link is a link. The "host" here serves the real widget script
/// and answers its ticket and event-stream requests in the API's shapes.
#[tokio::test(flavor = "multi_thread")]
async fn widget_never_renders_a_javascript_deep_link_as_a_link() {
    use axum::routing::{get, post};
    let script =
        std::fs::read_to_string(repo_root().join("host/src/api/widget/widget.js")).unwrap();
    let event = |call: &str, name: &str, link: &str| {
        json!({ "call_id": call, "state": "ringing", "caller": "+41795551234",
                "contact": { "name": name, "deep_link": link, "source": "test" } })
    };
    let stream = format!(
        "retry: 200\nevent: call\nid: 1\ndata: {}\n\nevent: call\nid: 2\ndata: {}\n\n",
        event("c-evil", "Eve Evil", "javascript:document.title='pwned'"),
        event("c-good", "Anna Muster", "https://crm.example.com/people/7"),
    );
    let page = "<!doctype html><html><body><h1>CRM</h1><script src=\"/widget.js\" data-key=\"lsk_test\"></script></body></html>";
    let app = axum::Router::new()
        .route("/crm", get(move || async move { axum::response::Html(page) }))
        .route(
            "/widget.js",
            get(move || {
                let s = script.clone();
                async move { ([("content-type", "text/javascript")], s) }
            }),
        )
        .route(
            "/api/v1/events/ticket",
            post(|| async {
                axum::Json(json!({ "ticket": "lst_x", "url": "/api/v1/events?ticket=lst_x", "expires_in_secs": 60 }))
            }),
        )
        .route(
            "/api/v1/events",
            get(move || {
                // The events, then the stream stays open (as the host's
                // does), so the widget does not reconnect and redraw.
                let s = stream.clone();
                async move {
                    use futures::StreamExt;
                    let body = futures::stream::iter([Ok::<_, std::convert::Infallible>(s)])
                        .chain(futures::stream::pending());
                    (
                        [("content-type", "text/event-stream")],
                        axum::body::Body::from_stream(body),
                    )
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let mut b = Browser::start(&url).await;
    b.goto("/crm").await;
    let mut rows = Vec::new();
    for _ in 0..200 {
        rows = b
            .client
            .find_all(Locator::Css("#leansync-widget [data-calls] li"))
            .await
            .unwrap_or_default();
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows.len(), 2, "events not shown:\n{}", b.html().await);
    let html = b.html().await;
    assert!(html.contains("Eve Evil"), "{html}");
    assert!(
        !html.contains("javascript:"),
        "the javascript: link was rendered:\n{html}"
    );
    let links = b
        .client
        .find_all(Locator::Css("#leansync-widget a"))
        .await
        .unwrap();
    let mut hrefs = Vec::new();
    for l in &links {
        hrefs.push(l.attr("href").await.unwrap().unwrap_or_default());
    }
    assert_eq!(hrefs, ["https://crm.example.com/people/7"], "{html}");
    b.shot("widget-unsafe-link-as-text").await;
    // Clicking the evil name runs nothing.
    let evil = b
        .client
        .find(Locator::XPath("//li[@data-call-id='c-evil']/div"))
        .await
        .unwrap();
    evil.click().await.unwrap();
    assert_ne!(b.client.title().await.unwrap(), "pwned");
    b.close().await;
}

// ---- several hosts -------------------------------------------------------

/// Behind a load balancer a user's requests reach any host: a session made
/// on one works on the other and ends on both, and a sign-in lock-out made
/// through one holds on the other.
#[tokio::test(flavor = "multi_thread")]
async fn hosts_on_one_database_share_sessions_and_the_sign_in_lock() {
    use leansync_tests::db::{Backend, TestDb};
    let db = TestDb::new(Backend::Postgres).await;
    let a = Host::start(&db.url).await;
    let b = Host::start_beside(&a).await;
    operator_password(&a).await;

    let mut on_a = Web::new(&a.url);
    assert_eq!(on_a.login(OP_EMAIL, OP_PASSWORD).await.0, 303);
    let mut on_b = Web::new(&b.url);
    on_b.cookies = on_a.cookies.clone();
    let (s, body) = on_b.get("/portal/customers").await;
    assert_eq!(
        s, 200,
        "a session made on host a is unknown on host b:\n{body}"
    );
    let (s, _) = on_b.post("/portal/logout", &[]).await;
    assert_eq!(s, 303);
    assert_eq!(
        on_a.get("/portal/customers").await.0,
        303,
        "signed out through host b, the session still works on host a"
    );

    let mut attacker = Web::from_source(&a.url, "127.0.0.9");
    for i in 1..=5 {
        let (s, _) = attacker.login(OP_EMAIL, "wrong-password-x").await;
        assert!(s == 401 || (i == 5 && s == 429), "attempt {i}: {s}");
    }
    let mut attacker_on_b = Web::from_source(&b.url, "127.0.0.9");
    let (s, body) = attacker_on_b.login_page(OP_EMAIL, OP_PASSWORD).await;
    assert_eq!(
        s, 429,
        "host b let a source locked through host a try again:\n{body}"
    );
    // The owner elsewhere is not affected, on either host.
    assert_eq!(Web::new(&b.url).login(OP_EMAIL, OP_PASSWORD).await.0, 303);
    drop((a, b));
    db.drop_db().await;
}
