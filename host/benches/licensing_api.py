#!/usr/bin/env python3
"""Licensing N numbers of one customer through the admin API, as an
operator and a customer admin would: import N numbers, order N licenses,
then provision and assign each. Prints the time of each phase and the
median and p99 of one provision and one assign.

Run: cargo build --release -p leansync-host && \
     python3 host/benches/licensing_api.py [--bin target/release/leansync] [--numbers 1000]
"""
import argparse, json, os, socket, statistics, subprocess, sys, tempfile, time
import urllib.request


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def call(base, token, method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Authorization", "Bearer " + token)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.loads(r.read() or b"null")


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * q))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", default="target/release/leansync")
    ap.add_argument("--numbers", type=int, default=1000)
    ap.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    data = tempfile.mkdtemp(prefix="lsbench")
    port = free_port()
    env = dict(os.environ,
               LEANSYNC_DATA_DIR=data,
               LEANSYNC_PLUGINS_DIR=os.path.join(root, "plugins"),
               LEANSYNC_LISTEN=f"127.0.0.1:{port}",
               LEANSYNC_LOG="warn")
    if a.database_url:
        env["LEANSYNC_DATABASE_URL"] = a.database_url
    out = subprocess.run([a.bin, "admin", "bootstrap", "--email", "ops@bench.test"],
                         env=env, capture_output=True, text=True, check=True).stdout
    token = next(l.split(": ", 1)[1].strip() for l in out.splitlines()
                 if l.startswith("API token (shown only now): "))
    host = subprocess.Popen([a.bin, "serve"], env=env, stderr=open(os.path.join(data, "host.log"), "w"))
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(base + "/readyz", timeout=1)
                break
            except Exception:
                time.sleep(0.1)
        n = a.numbers
        numbers = [f"+4144{i:07d}" for i in range(n)]
        t0 = time.perf_counter()
        c = call(base, token, "POST", "/api/v1/customers", {"name": "Bench AG"})
        adm = call(base, token, "POST", f"/api/v1/customers/{c['id']}/accounts",
                   {"email": "admin@bench.test"})["token"]
        # Simulated accounts are made by operators only (issue 14).
        tel = call(base, token, "POST", f"/api/v1/customers/{c['id']}/telephony-accounts",
                   {"provider": "sim", "settings": {"numbers": numbers}})["id"]
        call(base, adm, "POST", f"/api/v1/telephony-accounts/{tel}/consent", {"scope": "numbers"})
        t = time.perf_counter()
        call(base, adm, "POST", f"/api/v1/telephony-accounts/{tel}/import", {"numbers": numbers})
        t_import = time.perf_counter() - t
        ins = call(base, adm, "POST", f"/api/v1/customers/{c['id']}/installations",
                   {"connector": "webhook", "config": {"url": "http://127.0.0.1:9/x", "secret": "s"},
                    "granted_hosts": ["127.0.0.1"]})["id"]
        t = time.perf_counter()
        lic = call(base, adm, "POST", f"/api/v1/installations/{ins}/licenses", {"count": n})
        t_order = time.perf_counter() - t
        prov, asg = [], []
        for l, num in zip(lic, numbers):
            t = time.perf_counter()
            call(base, token, "POST", f"/api/v1/licenses/{l['id']}/provision")
            prov.append(time.perf_counter() - t)
            t = time.perf_counter()
            call(base, adm, "POST", f"/api/v1/licenses/{l['id']}/assign", {"number": num})
            asg.append(time.perf_counter() - t)
        total = time.perf_counter() - t0
        ms = lambda s: f"{s * 1000:.2f} ms"
        print(f"licensing {n} numbers through the API: {total:.2f} s in all")
        print(f"  import {ms(t_import)}, order {ms(t_order)}")
        print(f"  provision: median {ms(statistics.median(prov))}, p99 {ms(pct(prov, 0.99))}, "
              f"first 100 median {ms(statistics.median(prov[:100]))}, last 100 median {ms(statistics.median(prov[-100:]))}")
        print(f"  assign:    median {ms(statistics.median(asg))}, p99 {ms(pct(asg, 0.99))}, "
              f"first 100 median {ms(statistics.median(asg[:100]))}, last 100 median {ms(statistics.median(asg[-100:]))}")
    finally:
        host.terminate()
        host.wait()


if __name__ == "__main__":
    sys.exit(main())
