//! The gate every node test passes first: root or skip, and never skip on CI.

/// Whether this process may run node tests: true as root; otherwise skips loudly, or panics on CI.
///
/// Use as `if !require_root() { return; }` at the top of a node test.
pub fn require_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    match decide(root, ci) {
        Gate::Run => true,
        Gate::Skip => {
            eprintln!("{}", skip_banner(&test_name()));
            false
        }
        Gate::Fail => panic!(
            "node test `{}` needs root, and CI=true: node tests are never skipped on CI; \
             run the tests as root",
            test_name()
        ),
    }
}

/// Polls `done` every 50 ms until it holds; fails once `timeout` has passed.
pub fn wait_until(timeout: std::time::Duration, mut done: impl FnMut() -> bool) -> crate::Result<()> {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() >= deadline {
            return Err(crate::Error::Wait { what: "condition".into(), timeout, last: "not met".into() });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Ok(())
}

#[derive(Debug, PartialEq, Eq)]
enum Gate {
    Run,
    Skip,
    Fail,
}

fn decide(root: bool, ci: bool) -> Gate {
    match (root, ci) {
        (true, _) => Gate::Run,
        (false, false) => Gate::Skip,
        (false, true) => Gate::Fail,
    }
}

/// libtest names each test's thread after the test.
fn test_name() -> String {
    std::thread::current().name().unwrap_or("<unnamed>").to_string()
}

fn skip_banner(test: &str) -> String {
    let line = "!".repeat(78);
    format!(
        "{line}\n!!! SKIPPED node test `{test}`: it needs root (a private containerd, mounts).\n\
         !!! It did NOT run. Run as root to exercise it; with CI=true it fails instead.\n{line}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decision_table() {
        assert_eq!(decide(true, false), Gate::Run);
        assert_eq!(decide(true, true), Gate::Run);
        assert_eq!(decide(false, false), Gate::Skip);
        assert_eq!(decide(false, true), Gate::Fail);
    }

    #[test]
    fn banner_names_the_test() {
        assert!(skip_banner("t1").contains("SKIPPED node test `t1`"));
    }
}
