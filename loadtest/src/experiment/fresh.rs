//! A stack of its own for one measurement (a trial, a calibration, a sweep cell): a new
//! temporary directory for its data, logs and profile file, ephemeral ports, its own
//! Postgres schemas when Postgres is used, payments started with the run's model. Nothing
//! carries over from one measurement to the next; starting and stopping the five processes
//! takes well under a second, so there is nothing worth reusing.

use std::path::PathBuf;

use anyhow::{Context, Result};

use super::payments::PaymentsModel;
use super::plan::Backend;
use crate::stack::{LocalStack, StackOptions};

/// What a fresh stack runs.
pub struct FreshStack<'a> {
    pub backend: &'a Backend,
    /// Profile name (for the file name) and the YAML the services load.
    pub profile: &'a str,
    pub profile_yaml: &'a str,
    pub payments: &'a PaymentsModel,
    /// Seeds payments' service-time draws.
    pub seed: u64,
}

impl FreshStack<'_> {
    /// Starts the stack in a new temporary directory. Stop it with [`Started::finish`].
    pub async fn start(&self) -> Result<Started> {
        let dir = std::env::temp_dir().join(format!("frlab-run-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let opts = self.options(dir.clone())?;
        match LocalStack::start(opts).await {
            Ok(stack) => Ok(Started { stack, dir }),
            Err(e) => {
                eprintln!("  logs kept in {}", dir.join("logs").display());
                Err(e)
            }
        }
    }

    fn options(&self, dir: PathBuf) -> Result<StackOptions> {
        let profile_file = dir.join(format!("{}.yaml", self.profile.replace('/', "_")));
        std::fs::write(&profile_file, self.profile_yaml)
            .with_context(|| format!("writing {}", profile_file.display()))?;
        let backend = self.backend;
        let mut opts = StackOptions::new(dir.join("data"));
        opts.bin_dir = backend.bin_dir.clone();
        opts.database_url = backend.database_url.clone();
        opts.redis_url = backend.redis_url.clone();
        if backend.database_url.is_some() {
            let tag = uuid::Uuid::new_v4().simple().to_string();
            opts.schema_prefix = Some(format!("x{}_", &tag[..8]));
        }
        opts.profile = Some(profile_file.display().to_string());
        opts.ephemeral_ports = true;
        opts.log_dir = Some(dir.join("logs"));
        let mut payments = self.payments.args();
        payments.extend(["--seed".to_string(), self.seed.to_string()]);
        opts.extra_args.insert("payments".into(), payments);
        Ok(opts)
    }
}

/// A running fresh stack and its directory.
pub struct Started {
    pub stack: LocalStack,
    dir: PathBuf,
}

impl Started {
    /// Stops the stack and returns `outcome` (or the stop's error). The directory goes away
    /// after a clean run and stays, with the services' logs (whose path is printed), after a
    /// failed one.
    pub async fn finish<T>(self, outcome: Result<T>) -> Result<T> {
        let stopped = self.stack.stop().await;
        if outcome.is_err() || stopped.is_err() {
            eprintln!("  logs kept in {}", self.dir.join("logs").display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
        let value = outcome?;
        stopped?;
        Ok(value)
    }
}
