//! The one wasmtime engine (pooling allocator, epochs, async) and the on-disk
//! cache of precompiled components.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use wasmtime::component::Component;
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::PluginLimits;

/// How often the epoch advances; the granularity of per-call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Bytes of a linear memory kept resident when its slot is reused (a small
/// Rust guest's whole heap).
const KEEP_RESIDENT_MEMORY: usize = 2 << 20;
/// Bytes of a table kept resident.
const KEEP_RESIDENT_TABLE: usize = 64 << 10;
/// Bytes of an async fiber stack kept resident.
const KEEP_RESIDENT_STACK: usize = 256 << 10;

/// Builds the engine every plugin runs in.
pub fn build_engine(limits: &PluginLimits) -> anyhow::Result<Engine> {
    let mut pool = PoolingAllocationConfig::new();
    let instances = limits.max_instances.max(1);
    // A Rust component holds a few core instances (its module plus shims);
    // a componentize-py one 14 (libc, libpython and other shared libraries
    // linked dynamically), componentize-js about 4.
    pool.total_component_instances(instances)
        .total_core_instances(instances * 4)
        .max_core_instances_per_component(16)
        .total_memories(instances * 2)
        .max_memories_per_component(2)
        .total_tables(instances * 4)
        .total_stacks(instances)
        .max_memory_size((limits.memory_limit_mib as usize) << 20);
    // A slot given back keeps the pages the guest dirtied mapped and resets
    // them with memset instead of decommitting them: the next call on it
    // takes no page faults for the guest's heap, tables and fiber stack.
    // PAGEMAP_SCAN (Linux 6.7+, off by default in wasmtime) finds the pages
    // that were written; without it the first `keep_resident` bytes are
    // reset whole, which for a Rust guest is its entire 1 MiB stack region on
    // every call. Measured (BENCHMARKS.md, plugin invocation): per-call p99
    // 118-137 µs decommitting, 55-76 µs resident, 32 µs with the scan.
    pool.linear_memory_keep_resident(KEEP_RESIDENT_MEMORY)
        .table_keep_resident(KEEP_RESIDENT_TABLE)
        .async_stack_keep_resident(KEEP_RESIDENT_STACK)
        .pagemap_scan(Enabled::Auto);
    let mut cfg = Config::new();
    cfg.wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Keep virtual reservations proportional to the memory cap so a large
        // pool fits in the address space.
        .memory_reservation((limits.memory_limit_mib << 20).max(16 << 20))
        .memory_guard_size(64 << 10);
    Engine::new(&cfg).map_err(|e| anyhow::anyhow!("cannot create the wasmtime engine: {e:#}"))
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
}

impl EpochTicker {
    /// Starts the ticker thread.
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .expect("spawn epoch thread");
        Self { stop }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Precompiled components on disk, keyed by the engine's compatibility hash
/// and the component's SHA-256, so an unchanged plugin is never recompiled.
///
/// Deserialising an artifact runs its native code, so each carries an
/// HMAC-SHA256 under a key only this host holds (`<cache dir>.key`, mode
/// 0600, beside the cache folder); one that fails the check is discarded
/// and compiled again, so someone who can write into the cache cannot get
/// code run by the host.
pub struct ArtifactCache {
    dir: PathBuf,
    key: [u8; 32],
}

/// Where a loaded component came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// Compiled now (and written to the cache).
    Compiled,
    /// Deserialized from the cache.
    Cache,
}

/// Length of the HMAC-SHA256 tag after each artifact.
const MAC_LEN: usize = 32;

impl ArtifactCache {
    /// A cache under `dir/<engine compatibility hash>/`, its key in
    /// `dir.key` (created when missing).
    pub fn new(engine: &Engine, dir: &Path) -> anyhow::Result<Self> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        let key_path = dir.with_extension("key");
        let key = crate::store::keyfile::load_or_create(&key_path, "compile-cache key")?;
        Ok(Self {
            dir: dir.join(format!("{:016x}", h.finish())),
            key,
        })
    }

    fn mac(&self, bytes: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("any key length");
        mac.update(bytes);
        mac
    }

    /// Loads `wasm` from the cache or compiles and caches it.
    pub fn load(
        &self,
        engine: &Engine,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, Origin, String)> {
        let digest = hex::encode(Sha256::digest(wasm));
        let path = self.dir.join(format!("{digest}.cwasm"));
        if let Ok(stored) = std::fs::read(&path) {
            let verified = stored.len() > MAC_LEN && {
                let (art, tag) = stored.split_at(stored.len() - MAC_LEN);
                self.mac(art).verify_slice(tag).is_ok()
            };
            if verified {
                let art = &stored[..stored.len() - MAC_LEN];
                // SAFETY: the bytes carry this host's HMAC, so this host
                // wrote them with the same engine settings (the directory is
                // keyed by the engine's compatibility hash), and they are
                // checked and deserialised from the same memory.
                match unsafe { Component::deserialize(engine, art) } {
                    Ok(c) => return Ok((c, Origin::Cache, digest)),
                    Err(e) => {
                        tracing::warn!(path = %path.display(), error = %e, "discarding unreadable cached component");
                    }
                }
            } else {
                tracing::warn!(path = %path.display(), "cached component fails its integrity check (not written by this host, or altered); compiling it again");
            }
            let _ = std::fs::remove_file(&path);
        }
        let component = Component::new(engine, wasm)?;
        if let Err(e) = self.store(&path, &component) {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the compiled component to the cache");
        }
        Ok((component, Origin::Compiled, digest))
    }

    fn store(&self, path: &Path, component: &Component) -> anyhow::Result<()> {
        std::fs::create_dir_all(&self.dir)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        let mut bytes = component.serialize()?;
        let tag = self.mac(&bytes).finalize().into_bytes();
        bytes.extend_from_slice(&tag);
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)?;
        Ok(())
    }
}
