//! A real Radicale CardDAV server for tests: its own storage and htpasswd
//! user in a temp dir, a free loopback port, killed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::host::free_port;

/// The user every test address book belongs to.
pub const USER: &str = "anna";
/// That user's password (Basic auth).
pub const PASSWORD: &str = "dav-Secret-7";

/// A running Radicale.
pub struct Radicale {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    child: Child,
    dir: tempfile::TempDir,
}

impl Radicale {
    /// Starts Radicale (Debian package `radicale`, see scripts/test-deps.sh)
    /// and waits until it answers.
    pub fn start() -> Radicale {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("users"), format!("{USER}:{PASSWORD}\n")).unwrap();
        let config = dir.path().join("config");
        std::fs::write(
            &config,
            format!(
                "[server]\nhosts = 127.0.0.1:{port}\n[auth]\ntype = htpasswd\nhtpasswd_filename = {}\nhtpasswd_encryption = plain\n[storage]\nfilesystem_folder = {}\n[logging]\nlevel = warning\n",
                dir.path().join("users").display(),
                dir.path().join("collections").display(),
            ),
        )
        .unwrap();
        // Radicale fsyncs every item it writes, which makes loading a book
        // of 10,000 cards take minutes; the switch for that is internal, so
        // start the server from Python with it off (test data needs no
        // durability).
        let script = "import sys\nfrom radicale import config, log, server\nc = config.load([(sys.argv[1], False)])\nc.update({'storage': {'_filesystem_fsync': 'False'}}, 'test', privileged=True)\nlog.setup()\nserver.serve(c)\n";
        let log = std::fs::File::create(dir.path().join("radicale.log")).unwrap();
        let child = Command::new(radicale_python())
            .arg("-c")
            .arg(script)
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("cannot start Radicale: run scripts/test-deps.sh");
        let mut r = Radicale {
            url: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        };
        let until = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = r.child.try_wait().unwrap() {
                panic!("Radicale exited with {status}:\n{}", r.log());
            }
            assert!(
                Instant::now() < until,
                "Radicale not up in 20 s:\n{}",
                r.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        r
    }

    /// Everything Radicale logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("radicale.log")).unwrap_or_default()
    }

    /// URL of the address book `name` of [`USER`] (with the trailing `/`).
    pub fn book_url(&self, name: &str) -> String {
        format!("{}/{USER}/{name}/", self.url)
    }

    fn book_dir(&self, name: &str) -> PathBuf {
        self.dir
            .path()
            .join("collections/collection-root")
            .join(USER)
            .join(name)
    }

    /// Creates address book `name` holding `cards` (uid, vCard text) by
    /// writing Radicale's storage directly: uploading 10,000 cards over
    /// HTTP takes Radicale minutes.
    pub fn write_book(&self, name: &str, cards: &[(String, String)]) {
        let dir = self.book_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(".Radicale.props"), r#"{"tag": "VADDRESSBOOK"}"#).unwrap();
        for (uid, card) in cards {
            std::fs::write(dir.join(format!("{uid}.vcf")), card).unwrap();
        }
    }

    /// Creates an empty address book over CardDAV (MKCOL).
    pub async fn create_book(&self, name: &str) {
        let body = r#"<?xml version="1.0"?><D:mkcol xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:set><D:prop><D:resourcetype><D:collection/><C:addressbook/></D:resourcetype></D:prop></D:set></D:mkcol>"#;
        let status = self
            .request(
                "MKCOL",
                &self.book_url(name),
                body.into(),
                "application/xml",
            )
            .await;
        assert_eq!(status, 201, "MKCOL {name}:\n{}", self.log());
    }

    /// Stores a card over CardDAV (PUT), creating or replacing it.
    pub async fn put_card(&self, book: &str, uid: &str, card: &str) {
        let url = format!("{}{uid}.vcf", self.book_url(book));
        let status = self.request("PUT", &url, card.into(), "text/vcard").await;
        assert!(
            status == 201 || status == 204,
            "PUT {url} -> {status}:\n{}",
            self.log()
        );
    }

    /// Deletes a card over CardDAV.
    pub async fn delete_card(&self, book: &str, uid: &str) {
        let url = format!("{}{uid}.vcf", self.book_url(book));
        let status = self
            .request("DELETE", &url, String::new(), "text/plain")
            .await;
        assert!(status == 200 || status == 204, "DELETE {url} -> {status}");
    }

    /// Reads the whole book once, so Radicale builds its item cache before
    /// a measurement (its first read of a large book takes many seconds).
    pub async fn warm(&self, book: &str) {
        let body = r#"<?xml version="1.0"?><D:sync-collection xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:carddav"><D:sync-token/><D:sync-level>1</D:sync-level><D:prop><D:getetag/><C:address-data/></D:prop></D:sync-collection>"#;
        let status = self
            .request(
                "REPORT",
                &self.book_url(book),
                body.into(),
                "application/xml",
            )
            .await;
        assert_eq!(status, 207, "REPORT {book}:\n{}", self.log());
    }

    async fn request(&self, method: &str, url: &str, body: String, content_type: &str) -> u16 {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .unwrap()
            .request(method.parse().unwrap(), url)
            .basic_auth(USER, Some(PASSWORD))
            .header("content-type", content_type)
            .header("depth", "1")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e}"))
            .status()
            .as_u16()
    }
}

impl Drop for Radicale {
    fn drop(&mut self) {
        // The whole process group, in case the server forked workers.
        let _ = Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{}", self.child.id())])
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Python that runs the installed `radicale` command (its shebang).
fn radicale_python() -> PathBuf {
    let script = Path::new("/usr/bin/radicale");
    let text = std::fs::read_to_string(script)
        .unwrap_or_else(|_| panic!("{} missing: run scripts/test-deps.sh", script.display()));
    let shebang = text.lines().next().unwrap_or_default();
    let interpreter = shebang
        .trim_start_matches("#!")
        .split_whitespace()
        .next()
        .unwrap_or("/usr/bin/python3");
    PathBuf::from(interpreter)
}

/// A vCard 3.0 with one name, organisation and any number of TELs.
pub fn vcard(uid: &str, name: &str, org: &str, tels: &[&str]) -> String {
    let mut s = format!("BEGIN:VCARD\r\nVERSION:3.0\r\nUID:{uid}\r\nFN:{name}\r\nORG:{org}\r\n");
    for (i, t) in tels.iter().enumerate() {
        let kind = if i == 0 { "WORK" } else { "CELL" };
        s.push_str(&format!("TEL;TYPE={kind}:{t}\r\n"));
    }
    s.push_str("END:VCARD\r\n");
    s
}
