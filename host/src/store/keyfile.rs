//! Key files in the data dir (the secret key, the compile-cache key):
//! created atomically with mode 0600, refused when others could read them,
//! and never regenerated over a file that exists but cannot be read — a new
//! key would make everything the old one protected unreadable.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

/// Reads the 32-byte key at `path`, creating it (mode 0600, random) when
/// there is no file; `what` names the key in messages.
pub fn load_or_create(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    match std::fs::metadata(path) {
        Ok(meta) => {
            check_private(path, &meta, what)?;
            let bytes = std::fs::read(path).with_context(|| {
                format!(
                    "cannot read the {what} {}; fix its permissions or path (it is never regenerated over an existing file: what it protects would become unreadable)",
                    path.display()
                )
            })?;
            bytes.as_slice().try_into().map_err(|_| {
                anyhow::anyhow!(
                    "the {what} {} holds {} bytes, not 32; restore the right file (deleting it makes a new key, and what the old one protected becomes unreadable)",
                    path.display(),
                    bytes.len()
                )
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => create(path, what),
        Err(e) => Err(anyhow::anyhow!(
            "cannot inspect the {what} {} ({e}); fix the path or its folder's permissions",
            path.display()
        )),
    }
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata, what: &str) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !meta.is_file() {
        anyhow::bail!(
            "the {what} {} is not a file; point the setting at the key file",
            path.display()
        );
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        anyhow::bail!(
            "the {what} {} can be read by other users (mode {mode:03o}); run `chmod 600 {}` and start again",
            path.display(),
            path.display()
        );
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(path: &Path, meta: &std::fs::Metadata, what: &str) -> anyhow::Result<()> {
    if !meta.is_file() {
        anyhow::bail!("the {what} {} is not a file", path.display());
    }
    Ok(())
}

fn create(path: &Path, what: &str) -> anyhow::Result<[u8; 32]> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).context("the OS random number generator is unavailable")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    // Written whole under a temporary name, then linked into place: a host
    // starting beside this one sees either no key or the complete key.
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let written = opts.open(&tmp).and_then(|mut f| {
        f.write_all(&key)?;
        f.sync_all()
    });
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        anyhow::bail!("cannot create the {what} {} ({e})", path.display());
    }
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(key),
        // Another process made it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create(path, what),
        Err(e) => Err(anyhow::anyhow!(
            "cannot create the {what} {} ({e})",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_is_private_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k/secret.key");
        let a = load_or_create(&p, "secret key").unwrap();
        assert_eq!(load_or_create(&p, "secret key").unwrap(), a);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_readable_or_broken_key_file_is_refused_not_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret.key");
        std::fs::write(&p, [1u8; 32]).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = load_or_create(&p, "secret key").unwrap_err().to_string();
        assert!(
            err.contains("mode 644") && err.contains("chmod 600"),
            "{err}"
        );
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&p, [1u8; 5]).unwrap();
        let err = load_or_create(&p, "secret key").unwrap_err().to_string();
        assert!(err.contains("5 bytes"), "{err}");
        assert_eq!(std::fs::read(&p).unwrap(), [1u8; 5], "never overwritten");
        let d = dir.path().join("a-dir");
        std::fs::create_dir(&d).unwrap();
        let err = load_or_create(&d, "secret key").unwrap_err().to_string();
        assert!(err.contains("not a file"), "{err}");
    }
}
