//! Sign-in rate limiting: failed attempts per account and per source address in a sliding window.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked at once; beyond it, keys whose failures have all expired are dropped first.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

/// Counts failed sign-ins and says when an account or address must wait.
#[derive(Debug)]
pub struct LoginLimiter {
    window: Duration,
    per_account: usize,
    per_address: usize,
    failures: Mutex<HashMap<Key, VecDeque<Instant>>>,
}

impl LoginLimiter {
    /// A limiter allowing the given failures per account and per address within `window`.
    pub fn new(window: Duration, per_account: u32, per_address: u32) -> Self {
        LoginLimiter {
            window,
            per_account: per_account as usize,
            per_address: per_address as usize,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(wait)` when the account or the address has used up its failures.
    pub fn check(&self, account: &str, address: Option<IpAddr>) -> Result<(), Duration> {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return Ok(());
        };
        let mut wait = None;
        for (key, limit) in self.keys(account, address) {
            if let Some(times) = map.get_mut(&key) {
                prune(times, now, self.window);
                if times.len() >= limit
                    && let Some(oldest) = times.front()
                {
                    let until = (*oldest + self.window).saturating_duration_since(now);
                    wait = Some(wait.map_or(until, |w: Duration| w.max(until)));
                }
            }
        }
        wait.map_or(Ok(()), Err)
    }

    /// Records a failed sign-in for the account and the address.
    pub fn record_failure(&self, account: &str, address: Option<IpAddr>) {
        let now = Instant::now();
        let Ok(mut map) = self.failures.lock() else {
            return;
        };
        if map.len() >= MAX_KEYS {
            map.retain(|_, times| {
                prune(times, now, self.window);
                !times.is_empty()
            });
        }
        for (key, limit) in self.keys(account, address) {
            let times = map.entry(key).or_default();
            prune(times, now, self.window);
            times.push_back(now);
            while times.len() > limit {
                times.pop_front();
            }
        }
    }

    /// Forgets the account's failures after a successful sign-in (the address keeps its count).
    pub fn record_success(&self, account: &str) {
        if let Ok(mut map) = self.failures.lock() {
            map.remove(&Key::Account(account.to_lowercase()));
        }
    }

    fn keys(&self, account: &str, address: Option<IpAddr>) -> Vec<(Key, usize)> {
        let mut keys = vec![(Key::Account(account.to_lowercase()), self.per_account)];
        if let Some(ip) = address {
            keys.push((Key::Address(ip), self.per_address));
        }
        keys
    }
}

/// Caps how many denials per source address reach the audit log in a window, so a flood of
/// unauthenticated requests cannot fill the disk or stall the store with synchronous writes.
/// What is dropped is counted and reported on the next denial that is written.
#[derive(Debug)]
pub struct DenialThrottle {
    window: Duration,
    per_window: u32,
    sources: Mutex<HashMap<Option<IpAddr>, Window>>,
}

#[derive(Debug)]
struct Window {
    started: Instant,
    written: u32,
    dropped: u64,
}

impl DenialThrottle {
    /// Allows `per_window` written denials per source in each `window`.
    pub fn new(window: Duration, per_window: u32) -> Self {
        DenialThrottle {
            window,
            per_window,
            sources: Mutex::new(HashMap::new()),
        }
    }

    /// `Some(n)` if this denial is to be written, `n` being how many from the same source
    /// were dropped since the last one written; `None` if it is to be dropped.
    pub fn admit(&self, source: Option<IpAddr>) -> Option<u64> {
        let now = Instant::now();
        let Ok(mut map) = self.sources.lock() else {
            return Some(0);
        };
        if map.len() >= MAX_KEYS {
            map.retain(|_, w| now.saturating_duration_since(w.started) < self.window);
        }
        let w = map.entry(source).or_insert(Window {
            started: now,
            written: 0,
            dropped: 0,
        });
        if now.saturating_duration_since(w.started) >= self.window {
            w.started = now;
            w.written = 0;
        }
        if w.written < self.per_window {
            w.written += 1;
            Some(std::mem::take(&mut w.dropped))
        } else {
            w.dropped += 1;
            None
        }
    }
}

fn prune(times: &mut VecDeque<Instant>, now: Instant, window: Duration) {
    while times
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= window)
    {
        times.pop_front();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_limit_then_success_resets() {
        let l = LoginLimiter::new(Duration::from_secs(60), 3, 100);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..3 {
            assert!(l.check("Alice", Some(ip)).is_ok());
            l.record_failure("Alice", Some(ip));
        }
        let wait = l.check("alice", None).unwrap_err();
        assert!(wait > Duration::from_secs(50));
        assert!(l.check("bob", Some(ip)).is_ok());
        l.record_success("alice");
        assert!(l.check("alice", Some(ip)).is_ok());
    }

    #[test]
    fn address_limit_spans_accounts() {
        let l = LoginLimiter::new(Duration::from_secs(60), 100, 2);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        l.record_failure("a", Some(ip));
        l.record_failure("b", Some(ip));
        assert!(l.check("c", Some(ip)).is_err());
        assert!(l.check("c", None).is_ok());
    }

    #[test]
    fn denial_throttle_counts_what_it_drops() {
        let t = DenialThrottle::new(Duration::from_millis(50), 2);
        let ip: Option<IpAddr> = Some("10.0.0.2".parse().unwrap());
        assert_eq!(t.admit(ip), Some(0));
        assert_eq!(t.admit(ip), Some(0));
        assert_eq!(t.admit(ip), None);
        assert_eq!(t.admit(ip), None);
        assert_eq!(t.admit(None), Some(0));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(t.admit(ip), Some(2));
        assert_eq!(t.admit(ip), Some(0));
    }

    #[test]
    fn failures_expire() {
        let l = LoginLimiter::new(Duration::from_millis(50), 1, 1);
        l.record_failure("a", None);
        assert!(l.check("a", None).is_err());
        std::thread::sleep(Duration::from_millis(60));
        assert!(l.check("a", None).is_ok());
    }
}
