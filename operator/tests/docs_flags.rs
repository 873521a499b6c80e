//! docs/operator.md lists every flag of `wasmkube-operator run`, with its env var and default.

use std::collections::BTreeMap;

use clap::Args as _;
use wasmkube_operator::runtime::RunArgs;

/// The rows of the flag table, by flag (`--name`), as their cells.
fn documented_flags() -> anyhow::Result<BTreeMap<String, Vec<String>>> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/operator.md");
    let doc = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("reading {path}: {e}"))?;
    let table = doc
        .lines()
        .skip_while(|line| !line.starts_with("| flag | env | default |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'));
    let mut rows = BTreeMap::new();
    for line in table {
        let cells: Vec<String> = line.trim_matches('|').split('|').map(|c| c.trim().to_string()).collect();
        let flag = cells.first().map(|c| c.trim_matches('`').to_string()).unwrap_or_default();
        rows.insert(flag, cells);
    }
    anyhow::ensure!(!rows.is_empty(), "no flag table (header `| flag | env | default |`) in {path}");
    Ok(rows)
}

#[test]
fn every_flag_is_documented_with_its_env_and_default() -> anyhow::Result<()> {
    let rows = documented_flags()?;
    let command = RunArgs::augment_args(clap::Command::new("run"));
    let mut problems = Vec::new();
    let mut flags = Vec::new();
    for arg in command.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        let flag = format!("--{long}");
        flags.push(flag.clone());
        let Some(cells) = rows.get(&flag) else {
            problems.push(format!("{flag} is not in the table"));
            continue;
        };
        let cell = |i: usize| cells.get(i).map(String::as_str).unwrap_or_default();
        match arg.get_env() {
            Some(env) => {
                let env = format!("`{}`", env.to_string_lossy());
                if !cell(1).contains(&env) {
                    problems.push(format!("{flag}: env column {:?} lacks {env}", cell(1)));
                }
            }
            None => problems.push(format!("{flag} has no env var; the docs say every flag has one")),
        }
        for default in arg.get_default_values() {
            let default = format!("`{}`", default.to_string_lossy());
            if !cell(2).starts_with(&default) {
                problems.push(format!("{flag}: default column {:?} does not start with {default}", cell(2)));
            }
        }
        if cell(3).is_empty() {
            problems.push(format!("{flag}: no meaning"));
        }
    }
    for flag in rows.keys().filter(|f| !flags.contains(f)) {
        problems.push(format!("{flag} is documented but is no flag of `run`"));
    }
    assert!(problems.is_empty(), "docs/operator.md's flag table is out of date:\n{}", problems.join("\n"));
    Ok(())
}
