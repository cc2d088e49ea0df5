//! One place decides whether and when a storage request is tried again (the SDK's own retry
//! policy is switched off): a transient failure (5xx, 408, 429, connection errors, a try cut
//! off by its timeout) is retried with exponential backoff and jitter, a bounded number of
//! times; a definite one comes back at once. The schedule is pure ([`RetryPolicy::backoff`],
//! [`RetryPolicy::wait`]) so that tests check it without a clock; the loop waits on tokio's
//! clock, which a test can pause.

use std::time::Duration;

use super::SinkError;

/// How transient failures are retried. Every request is tried at most `max_tries` times;
/// the wait before try `n + 1` is `min(initial_delay * 2^(n-1), max_delay)` scaled by a random
/// factor in [0.5, 1.0] (jitter, so many writers do not retry in step). Each try is cut off
/// after `try_timeout`, which counts as a transient failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    pub max_tries: u32,
    pub initial_delay: Duration,
    pub max_delay: Duration,
    pub try_timeout: Duration,
}

impl Default for RetryPolicy {
    /// 5 tries, 0.5 s doubling up to 8 s (at most ~7.5 s of waiting), 120 s per try (a 4 MiB
    /// block at 35 KiB/s still fits).
    fn default() -> Self {
        RetryPolicy {
            max_tries: 5,
            initial_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(8),
            try_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryPolicy {
    /// The wait before try `attempt + 1` (`attempt` counts from 1), before jitter.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let factor = 2u32.saturating_pow(attempt.saturating_sub(1));
        self.initial_delay
            .saturating_mul(factor)
            .min(self.max_delay)
    }

    /// The wait before try `attempt + 1` with `jitter` (clamped to [0.5, 1.0]) applied.
    pub fn wait(&self, attempt: u32, jitter: f64) -> Duration {
        self.backoff(attempt).mul_f64(jitter.clamp(0.5, 1.0))
    }

    /// Runs `op` until it succeeds, fails definitely, or `max_tries` is used up.
    pub(crate) async fn run<T, F, Fut>(
        &self,
        operation: &'static str,
        target: &str,
        mut op: F,
    ) -> Result<T, SinkError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, SinkError>>,
    {
        let max_tries = self.max_tries.max(1);
        let mut attempt = 1;
        loop {
            let result = match tokio::time::timeout(self.try_timeout, op()).await {
                Ok(r) => r,
                Err(_) => Err(SinkError::transport(
                    operation,
                    target,
                    format!("no answer within {:?}", self.try_timeout),
                )),
            };
            match result {
                Err(e) if e.is_transient() && attempt < max_tries => {
                    let wait = self.wait(attempt, rand::random_range(0.5..=1.0));
                    tracing::warn!(
                        operation,
                        target,
                        attempt,
                        max_tries,
                        wait_ms = wait.as_millis() as u64,
                        error = %e,
                        "transient blob storage failure, retrying"
                    );
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let p = RetryPolicy {
            max_tries: 10,
            initial_delay: Duration::from_millis(100),
            max_delay: Duration::from_millis(1000),
            try_timeout: Duration::from_secs(1),
        };
        let got: Vec<u128> = (1..=6).map(|a| p.backoff(a).as_millis()).collect();
        assert_eq!(got, vec![100, 200, 400, 800, 1000, 1000]);
        assert_eq!(p.backoff(100), Duration::from_millis(1000));
    }

    /// Jitter scales the backoff by 0.5–1.0 and nothing else.
    #[test]
    fn jitter_stays_within_half_to_full_backoff() {
        let p = RetryPolicy::default();
        // (attempt, jitter, wait in ms)
        let cases = [
            (1, 1.0, 500),
            (1, 0.5, 250),
            (1, 0.2, 250),
            (2, 0.75, 750),
            (4, 1.0, 4000),
            (4, 7.0, 4000),
            (9, 1.0, 8000),
        ];
        for (attempt, jitter, ms) in cases {
            assert_eq!(
                p.wait(attempt, jitter).as_millis(),
                ms,
                "{attempt} {jitter}"
            );
        }
    }

    /// The default policy is bounded: 5 tries, at most 0.5 + 1 + 2 + 4 s of waiting.
    #[test]
    fn default_policy_is_bounded() {
        let p = RetryPolicy::default();
        assert_eq!(p.max_tries, 5);
        let most: Duration = (1..p.max_tries).map(|a| p.wait(a, 1.0)).sum();
        let least: Duration = (1..p.max_tries).map(|a| p.wait(a, 0.5)).sum();
        assert_eq!((least.as_millis(), most.as_millis()), (3750, 7500));
    }

    /// Paused tokio clock: the waits and the cut-off cost no real time and are exact.
    #[tokio::test(start_paused = true)]
    async fn retry_runs_bounded_and_stops_on_definite_errors() {
        let p = RetryPolicy {
            max_tries: 3,
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(2),
            try_timeout: Duration::from_millis(200),
        };
        let http = |status, code: &str| SinkError::Http {
            operation: "t",
            target: "c/b".into(),
            status,
            code: Some(code.into()),
            message: None,
        };
        let transient = || http(503, "ServerBusy");
        let definite = || http(403, "AuthenticationFailed");
        let cases: Vec<(Vec<SinkError>, u32, bool)> = vec![
            (vec![transient(), transient(), transient()], 3, false),
            (vec![transient()], 2, true),
            (vec![definite()], 1, false),
            (vec![], 1, true),
        ];
        for (failures, want_calls, want_ok) in cases {
            let failures = std::sync::Mutex::new(failures.into_iter());
            let calls = std::sync::atomic::AtomicU32::new(0);
            let result = p
                .run("t", "c/b", || {
                    calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let next = failures.lock().unwrap().next();
                    async move { next.map_or(Ok(()), Err) }
                })
                .await;
            assert_eq!(calls.into_inner(), want_calls);
            assert_eq!(result.is_ok(), want_ok);
        }
        // A try that hangs is cut off and counts as transient: three cut-offs, two waits.
        let start = tokio::time::Instant::now();
        let result: Result<(), SinkError> = p.run("t", "c/b", std::future::pending).await;
        let elapsed = start.elapsed();
        match result {
            Err(SinkError::Transport { reason, .. }) => {
                assert!(reason.contains("no answer within"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(
            elapsed >= Duration::from_millis(600) && elapsed <= Duration::from_millis(610),
            "{elapsed:?}"
        );
    }
}
