//! Runs a wasi:cli component the way a process runs: args, env, stdio, exit code.

use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::sync::watch;
use wasmtime::Engine;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::I32Exit;

use super::cache::Pin;
use super::cpu::CpuMetered;
use super::host::{guest_failure, new_store, Host, MemoryLimitExceeded};
use super::workload::LogDrains;
use crate::runtime::{next_signal, Exit, Signal, Usage, Workload};

/// Exit code of a guest that trapped: what a process killed by SIGABRT reports (as the wasmtime CLI does).
const TRAP_EXIT_CODE: u32 = 128 + libc::SIGABRT as u32;

/// A wasi:cli component linked and ready to start.
pub struct CliWorkload {
    pub(crate) engine: Engine,
    pub(crate) pre: CommandPre<Host>,
    /// The one instance's state, made at create so that a volume that cannot be opened fails it there.
    pub(crate) host: Host,
    pub(crate) usage: Arc<Usage>,
    pub(crate) logs: LogDrains,
    /// Keeps the component's node-cache entries from eviction while the container lives.
    pub(crate) cache_pin: Pin,
}

impl Workload for CliWorkload {
    fn start(self: Box<Self>, signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit> {
        Box::pin(self.run(signals))
    }

    fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }
}

impl CliWorkload {
    async fn run(self, mut signals: watch::Receiver<Option<Signal>>) -> Exit {
        let CliWorkload { engine, pre, host, usage, logs, cache_pin: _pin } = self;
        let mut store = new_store(&engine, host);

        let exit = tokio::select! {
            result = CpuMetered::new(
                async {
                    let command = pre.instantiate_async(&mut store).await?;
                    command.wasi_cli_run().call_run(&mut store).await
                },
                &usage,
            ) => exit_of(result),
            signal = next_signal(&mut signals) => Exit::code(128 + signal.0),
        };
        // Dropping the store closes the guest's stdio; then the buffered output reaches the log.
        drop(store);
        logs.finish().await;
        exit
    }
}

fn exit_of(result: wasmtime::Result<Result<(), ()>>) -> Exit {
    match result {
        Ok(Ok(())) => Exit::code(0),
        Ok(Err(())) => Exit::code(1),
        Err(e) => {
            if let Some(I32Exit(code)) = e.downcast_ref::<I32Exit>() {
                // A process's exit status keeps the low 8 bits.
                return Exit::code((*code as u32) & 0xff);
            }
            if let Some(oom) = e.downcast_ref::<MemoryLimitExceeded>() {
                return Exit::out_of_memory(oom.to_string());
            }
            Exit::failed(TRAP_EXIT_CODE, format!("the component trapped: {}", guest_failure(&e)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_process_conventions() {
        assert_eq!(exit_of(Ok(Ok(()))), Exit::code(0));
        assert_eq!(exit_of(Ok(Err(()))), Exit::code(1));
        assert_eq!(exit_of(Err(wasmtime::Error::new(I32Exit(3)))), Exit::code(3));
        assert_eq!(exit_of(Err(wasmtime::Error::new(I32Exit(256 + 7)))), Exit::code(7));
        let oom = exit_of(Err(wasmtime::Error::new(MemoryLimitExceeded { wanted: 2, limit: 1 })));
        assert_eq!(oom.code, 137);
        assert!(oom.oom_killed);
        assert!(oom.reason.unwrap().starts_with("OOMKilled"));
        let trap = exit_of(Err(wasmtime::format_err!("unreachable")));
        assert_eq!(trap.code, 134);
        assert!(trap.reason.unwrap().contains("unreachable"));
    }
}
