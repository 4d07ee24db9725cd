//! The per-process state behind [`super::Templates`]: lookups reused for a short TTL,
//! compiled versions kept by `template_id@version` (bounded, least recently used evicted),
//! and usage counts waiting to be written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;
use uuid::Uuid;

use super::render::Compiled;
use super::{LookupError, Resolved, TemplateRef};

/// Compiled template versions kept in memory per process.
const COMPILED_CAPACITY: usize = 256;
/// Lookup entries kept before expired ones are swept.
const LOOKUP_SWEEP_AT: usize = 4096;

/// A compiled version and what it is.
pub(super) struct CompiledTemplate {
    pub name: String,
    pub version: i32,
    pub compiled: Compiled,
}

/// `template_id`, version, and `updated_at` for the current version (an edit without a
/// version bump then makes a new key); `None` for versions read from `versions`.
pub(super) type CompiledKey = (Uuid, i32, Option<NaiveDateTime>);
/// A compile error is cached too (as the reason rows fail with), so a broken stored
/// template is not fetched and parsed again for every email.
pub(super) type CompileResult = Result<Arc<CompiledTemplate>, String>;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum LookupKey {
    Id(Uuid, String),
    Name(String, String),
}

impl LookupKey {
    pub fn new(template: TemplateRef<'_>, locale: &str) -> LookupKey {
        match template {
            TemplateRef::Id(id) => LookupKey::Id(id, locale.to_string()),
            TemplateRef::Name(n) => LookupKey::Name(n.to_string(), locale.to_string()),
        }
    }
}

type LookupEntry = (Instant, Result<Resolved, LookupError>);

#[derive(Default)]
pub(super) struct Caches {
    lookups: Mutex<HashMap<LookupKey, LookupEntry>>,
    compiled: Mutex<HashMap<CompiledKey, (u64, CompileResult)>>,
    tick: AtomicU64,
    usage: Mutex<HashMap<Uuid, (i32, NaiveDateTime)>>,
}

impl Caches {
    pub fn lookup(&self, key: &LookupKey, ttl: Duration) -> Option<Result<Resolved, LookupError>> {
        let l = self.lookups.lock().ok()?;
        let (at, r) = l.get(key)?;
        (at.elapsed() < ttl).then(|| r.clone())
    }

    pub fn store_lookup(&self, key: LookupKey, ttl: Duration, r: Result<Resolved, LookupError>) {
        if ttl.is_zero() {
            return;
        }
        if let Ok(mut l) = self.lookups.lock() {
            if l.len() >= LOOKUP_SWEEP_AT {
                l.retain(|_, (at, _)| at.elapsed() < ttl);
            }
            l.insert(key, (Instant::now(), r));
        }
    }

    pub fn clear_lookups(&self) {
        if let Ok(mut l) = self.lookups.lock() {
            l.clear();
        }
    }

    pub fn compiled(&self, key: &CompiledKey) -> Option<CompileResult> {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        let mut c = self.compiled.lock().ok()?;
        let (used, entry) = c.get_mut(key)?;
        *used = tick;
        Some(entry.clone())
    }

    pub fn store_compiled(&self, key: CompiledKey, value: CompileResult) {
        let tick = self.tick.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = self.compiled.lock() {
            if c.len() >= COMPILED_CAPACITY
                && let Some(oldest) = c.iter().min_by_key(|(_, (t, _))| *t).map(|(k, _)| *k)
            {
                c.remove(&oldest);
            }
            c.insert(key, (tick, value));
        }
    }

    pub fn record_use(&self, id: Uuid, at: NaiveDateTime) {
        if let Ok(mut u) = self.usage.lock() {
            let e = u.entry(id).or_insert((0, at));
            e.0 = e.0.saturating_add(1);
            e.1 = e.1.max(at);
        }
    }

    /// Takes the counts to write; [`Caches::restore_usage`] puts them back if that fails.
    pub fn take_usage(&self) -> Vec<(Uuid, i32, NaiveDateTime)> {
        match self.usage.lock() {
            Ok(mut u) => u.drain().map(|(id, (n, at))| (id, n, at)).collect(),
            Err(_) => Vec::new(),
        }
    }

    pub fn restore_usage(&self, pending: Vec<(Uuid, i32, NaiveDateTime)>) {
        if let Ok(mut u) = self.usage.lock() {
            for (id, n, at) in pending {
                let e = u.entry(id).or_insert((0, at));
                e.0 = e.0.saturating_add(n);
                e.1 = e.1.max(at);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_summed_and_restored() {
        let c = Caches::default();
        let t0 = chrono::DateTime::from_timestamp(1_000, 0)
            .unwrap()
            .naive_utc();
        let t1 = chrono::DateTime::from_timestamp(2_000, 0)
            .unwrap()
            .naive_utc();
        let id = Uuid::from_u128(1);
        c.record_use(id, t1);
        c.record_use(id, t0);
        let taken = c.take_usage();
        assert_eq!(taken, vec![(id, 2, t1)]);
        assert!(c.take_usage().is_empty());
        c.restore_usage(taken);
        c.record_use(id, t0);
        assert_eq!(c.take_usage(), vec![(id, 3, t1)]);
    }

    #[test]
    fn lookups_expire_and_zero_ttl_caches_nothing() {
        let c = Caches::default();
        let key = LookupKey::new(TemplateRef::Name("welcome"), "en-US");
        let miss = Err(LookupError::NotFound("welcome".into()));
        c.store_lookup(key.clone(), Duration::ZERO, miss.clone());
        assert_eq!(c.lookup(&key, Duration::from_secs(1)), None);
        c.store_lookup(key.clone(), Duration::from_secs(60), miss.clone());
        assert_eq!(c.lookup(&key, Duration::from_secs(60)), Some(miss));
        assert_eq!(c.lookup(&key, Duration::ZERO), None);
        c.clear_lookups();
        assert_eq!(c.lookup(&key, Duration::from_secs(60)), None);
    }
}
