//! `leansync plugin build [DIR]`: runs the connector's build, places the
//! component where `plugin.toml` names it, and loads it as `plugin check`
//! does. Each step prints what it runs and how long it took.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::config::PluginLimits;
use crate::plugins::manifest::{MANIFEST_FILE, Manifest};
use crate::plugins::runtime::PluginRuntime;

/// The language a connector folder is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// A cargo crate (`Cargo.toml`).
    Rust,
    /// componentize-py (`app.py`).
    Python,
    /// jco / componentize-js (`package.json`).
    Js,
}

impl Lang {
    /// Parses `rust`, `python` or `js`.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "rust" | "rs" => Ok(Lang::Rust),
            "python" | "py" => Ok(Lang::Python),
            "js" | "javascript" => Ok(Lang::Js),
            other => Err(format!("--lang {other}: choose rust, python or js")),
        }
    }

    /// Guesses from the files in `dir`.
    pub fn detect(dir: &Path) -> Option<Self> {
        if dir.join("Cargo.toml").is_file() {
            Some(Lang::Rust)
        } else if dir.join("package.json").is_file() || dir.join("app.js").is_file() {
            Some(Lang::Js)
        } else if dir.join("app.py").is_file() || dir.join("pyproject.toml").is_file() {
            Some(Lang::Python)
        } else {
            None
        }
    }
}

/// The build command of a language without a `[build] command`, writing
/// `component`: Python and JavaScript projects as `plugin new` lays them out
/// (`app.py` / `app.js` and `wit/`); Rust builds with cargo instead.
pub fn default_command(lang: Lang, component: &str) -> Option<String> {
    match lang {
        Lang::Rust => None,
        Lang::Python => Some(format!(
            "componentize-py -d wit -w leansync:guest/connector-guest componentize app -o {component}"
        )),
        Lang::Js => Some(format!(
            "componentize-js app.js --wit wit -n leansync:guest/connector-guest -o {component}"
        )),
    }
}

/// Builds `dir`; `Err` says which step failed and what to do.
pub fn build(dir: &Path, limits: &PluginLimits) -> Result<PathBuf, String> {
    let total = Instant::now();
    let manifest = Manifest::load(dir).map_err(|e| e.to_string())?;
    let target = dir.join(&manifest.component);
    match &manifest.build.command {
        Some(cmd) => {
            step(&format!("sh -c {cmd:?}"), || run(dir, "sh", &["-c", cmd]))?;
            let output = manifest
                .build
                .output
                .as_deref()
                .map(|o| dir.join(o))
                .unwrap_or_else(|| target.clone());
            place(&output, &target)?;
        }
        None => match Lang::detect(dir) {
            Some(Lang::Rust) => {
                let built = step("cargo build --release --target wasm32-wasip2", || {
                    cargo_build(dir)
                })?;
                place(&built, &target)?;
            }
            Some(lang) => {
                let cmd = default_command(lang, &manifest.component.display().to_string())
                    .unwrap_or_default();
                step(&format!("sh -c {cmd:?}"), || run(dir, "sh", &["-c", &cmd]))?;
            }
            None => {
                return Err(format!(
                    "{}: cannot tell how to build this folder (no Cargo.toml, package.json or app.py); add `[build] command = \"…\"` to {MANIFEST_FILE}",
                    dir.display()
                ));
            }
        },
    }
    step(&format!("check {}", target.display()), || {
        check(dir, limits)
    })?;
    println!(
        "built {} in {:.1} s",
        target.display(),
        total.elapsed().as_secs_f64()
    );
    Ok(target)
}

/// Prints a step, runs it, prints how long it took.
fn step<T>(what: &str, f: impl FnOnce() -> Result<T, String>) -> Result<T, String> {
    println!("==> {what}");
    let t = Instant::now();
    let out = f();
    let secs = t.elapsed().as_secs_f64();
    match &out {
        Ok(_) => println!("    done in {secs:.1} s"),
        Err(_) => println!("    failed after {secs:.1} s"),
    }
    out
}

fn run(dir: &Path, program: &str, args: &[&str]) -> Result<(), String> {
    let status = Command::new(program)
        .args(args)
        .current_dir(dir)
        .status()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if status.success() {
        Ok(())
    } else if status.code() == Some(127) {
        Err(format!(
            "`{}`: a command was not found; install the language's component tool (Python: `pip install componentize-py==0.25.1`; JavaScript: `npm install -g @bytecodealliance/componentize-js@0.23.0`) or fix `[build] command` in {MANIFEST_FILE}",
            args.join(" ")
        ))
    } else {
        Err(format!(
            "`{program} {}` failed ({status}); the messages above say why",
            args.join(" ")
        ))
    }
}

/// `cargo build` for wasm32-wasip2; the path of the built `.wasm`.
fn cargo_build(dir: &Path) -> Result<PathBuf, String> {
    let cargo_toml = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&cargo_toml)
        .map_err(|e| format!("{}: {e}", cargo_toml.display()))?;
    let doc: toml::Table =
        toml::from_str(&text).map_err(|e| format!("{}: {e}", cargo_toml.display()))?;
    let crate_name = doc
        .get("lib")
        .and_then(|l| l.get("name"))
        .or_else(|| doc.get("package").and_then(|p| p.get("name")))
        .and_then(|n| n.as_str())
        .ok_or_else(|| format!("{}: no [package] name", cargo_toml.display()))?
        .replace('-', "_");
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-wasip2")
        })
        .unwrap_or(true);
    if !installed {
        return Err(
            "the wasm32-wasip2 target is not installed: run `rustup target add wasm32-wasip2`"
                .into(),
        );
    }
    run(
        dir,
        "cargo",
        &["build", "--release", "--target", "wasm32-wasip2"],
    )?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| if p.is_absolute() { p } else { dir.join(p) })
        .unwrap_or_else(|| dir.join("target"));
    let built = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{crate_name}.wasm"));
    if !built.is_file() {
        return Err(format!(
            "cargo finished but {} is missing; is `crate-type = [\"cdylib\"]` set under [lib] in Cargo.toml?",
            built.display()
        ));
    }
    Ok(built)
}

/// Copies the build output to the manifest's component path (only when it
/// changed, so a watching host reloads only on real changes).
fn place(from: &Path, to: &Path) -> Result<(), String> {
    if from == to {
        return if to.is_file() {
            Ok(())
        } else {
            Err(format!(
                "the build command did not write {}; fix `[build] command` or `output` in {MANIFEST_FILE}",
                to.display()
            ))
        };
    }
    let new = std::fs::read(from).map_err(|e| {
        format!(
            "the build did not produce {} ({e}); fix `[build] output` in {MANIFEST_FILE}",
            from.display()
        )
    })?;
    if std::fs::read(to).ok().as_deref() != Some(&new[..]) {
        let tmp = to.with_extension("wasm.tmp");
        std::fs::write(&tmp, &new)
            .and_then(|_| std::fs::rename(&tmp, to))
            .map_err(|e| format!("cannot write {}: {e}", to.display()))?;
    }
    Ok(())
}

/// Loads the folder as the host would.
pub fn check(dir: &Path, limits: &PluginLimits) -> Result<(), String> {
    let cache = super::cache_dir();
    std::fs::create_dir_all(&cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    let rt = PluginRuntime::new(limits.clone(), &cache).map_err(|e| format!("{e:#}"))?;
    let p = rt.load(dir)?;
    let size = std::fs::metadata(dir.join(&p.manifest.component))
        .map(|m| m.len())
        .unwrap_or(0);
    println!(
        "    ok: {} {} (connector API {}), {} ({} KiB)",
        p.manifest.name,
        p.manifest.version,
        p.api_version,
        p.manifest.component.display(),
        size / 1024
    );
    Ok(())
}
