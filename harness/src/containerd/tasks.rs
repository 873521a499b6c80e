//! Watching tasks through `ctr task ls`.

use std::time::{Duration, Instant};

use super::PrivateContainerd;
use crate::error::{Error, Result};

/// One row of `ctr task ls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskRow {
    /// Container id.
    pub id: String,
    /// PID the runtime reports (0 once a task is gone, or for runtimes without processes).
    pub pid: u32,
    /// `CREATED`, `RUNNING`, `STOPPED`, `PAUSED` or `UNKNOWN`.
    pub status: String,
}

/// Parses the table `ctr task ls` prints.
pub fn parse_task_ls(out: &str) -> Vec<TaskRow> {
    out.lines()
        .filter_map(|line| match line.split_whitespace().collect::<Vec<_>>().as_slice() {
            [id, pid, status] if *id != "TASK" => {
                Some(TaskRow { id: id.to_string(), pid: pid.parse().ok()?, status: status.to_string() })
            }
            _ => None,
        })
        .collect()
}

impl PrivateContainerd {
    /// Tasks of the default namespace.
    pub fn tasks(&self) -> Result<Vec<TaskRow>> {
        let out = self.ctr(["task", "ls"])?.check("ctr task ls")?;
        Ok(parse_task_ls(&out.stdout))
    }

    /// Polls until task `id` has `status` (e.g. `RUNNING`, `STOPPED`); returns its pid.
    pub fn wait_task_status(&self, id: &str, status: &str, timeout: Duration) -> Result<u32> {
        let deadline = Instant::now() + timeout;
        loop {
            let row = self.tasks()?.into_iter().find(|t| t.id == id);
            match row {
                Some(t) if t.status == status => return Ok(t.pid),
                last if Instant::now() >= deadline => {
                    return Err(Error::Wait {
                        what: format!("task {id} in state {status}"),
                        timeout,
                        last: last.map_or_else(|| "no such task".into(), |t| t.status),
                    })
                }
                _ => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ctr_task_ls() {
        let out = "TASK        PID      STATUS    \nt-left      4242     RUNNING\nt-killed    4100     STOPPED\n";
        let rows = parse_task_ls(out);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0], TaskRow { id: "t-left".into(), pid: 4242, status: "RUNNING".into() });
        assert_eq!(rows[1].status, "STOPPED");
    }
}
