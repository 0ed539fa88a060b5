//! The sandbox's part of the configuration: which image tasks run in, and how much of the
//! machine one sandbox may use.

use serde::{Deserialize, Serialize};

use crate::Limits;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// The sandbox image; the default is built on this machine by `berth image build`.
    pub sandbox_image: Option<String>,
    /// Memory of one sandbox, in MiB (no swap on top).
    pub sandbox_memory_mb: u64,
    /// CPUs of one sandbox.
    pub sandbox_cpus: f64,
    /// Most processes in one sandbox.
    pub sandbox_pids: i64,
    /// Started, unused sandboxes a runner keeps ready per image (0: none, every task starts
    /// cold). Each costs a few MiB of memory while it waits.
    pub warm_pool_size: usize,
    /// The most the memory limits of a runner's pooled sandboxes may add up to, in MiB
    /// (0: the memory the machine has available when one is added).
    pub warm_pool_memory_mb: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            sandbox_image: None,
            sandbox_memory_mb: 2048,
            sandbox_cpus: 1.0,
            sandbox_pids: 512,
            warm_pool_size: 0,
            warm_pool_memory_mb: 0,
        }
    }
}

impl Settings {
    /// `Err` says which setting is wrong and what it must be.
    pub fn validate(&self) -> Result<(), String> {
        if self.sandbox_memory_mb < 64
            || !self.sandbox_cpus.is_finite()
            || self.sandbox_cpus <= 0.0
            || self.sandbox_pids < 16
        {
            return Err(
                "sandbox limits too small: sandbox_memory_mb >= 64, sandbox_cpus > 0, \
                 sandbox_pids >= 16"
                    .into(),
            );
        }
        Ok(())
    }

    /// How the runner's warm pool is sized: its containers have the server's limits.
    pub fn pool(&self) -> crate::PoolSettings {
        let budget = (self.warm_pool_memory_mb > 0).then_some(self.warm_pool_memory_mb << 20);
        crate::PoolSettings::new(self.warm_pool_size, self.limits(), budget)
    }

    /// The limits of one sandbox when its task asks for no less.
    pub fn limits(&self) -> Limits {
        Limits {
            memory_bytes: self.sandbox_memory_mb << 20,
            cpus: self.sandbox_cpus,
            pids: self.sandbox_pids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_below_what_a_shell_needs_are_refused() {
        Settings::default().validate().unwrap();
        assert_eq!(Settings::default().limits().memory_bytes, 2048 << 20);
        for settings in [
            Settings {
                sandbox_memory_mb: 32,
                ..Settings::default()
            },
            Settings {
                sandbox_cpus: f64::NAN,
                ..Settings::default()
            },
            Settings {
                sandbox_pids: 8,
                ..Settings::default()
            },
        ] {
            assert!(settings.validate().unwrap_err().contains("sandbox_"));
        }
    }

    #[test]
    fn the_pool_has_the_server_limits_and_a_budget_only_when_one_is_set() {
        let settings = Settings {
            warm_pool_size: 2,
            sandbox_memory_mb: 512,
            ..Settings::default()
        };
        let pool = settings.pool();
        assert_eq!(pool.size, 2);
        assert_eq!(pool.limits, settings.limits());
        assert_eq!(pool.memory_budget_bytes, None, "0: the memory available");
        let bounded = Settings {
            warm_pool_memory_mb: 1024,
            ..settings
        };
        assert_eq!(bounded.pool().memory_budget_bytes, Some(1 << 30));
    }
}
