//! Prometheus text exposition format, read just far enough to get samples (name, labels, value).

use std::collections::BTreeMap;

/// One sample line: `name{label="value",...} value [timestamp]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Metric name, with any `_total` suffix as written.
    pub name: String,
    /// Label pairs, sorted by name.
    pub labels: BTreeMap<String, String>,
    /// Sample value.
    pub value: f64,
}

/// Parse the samples of a scrape. Comments (`# HELP`, `# TYPE`, `# EOF`) and blank lines are ignored;
/// a malformed line is skipped with a debug log, so one bad series never hides the others.
pub fn parse(text: &str) -> Vec<Sample> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .filter_map(|line| match parse_line(line) {
            Ok(sample) => Some(sample),
            Err(reason) => {
                tracing::debug!(line, reason, "skipping malformed metrics line");
                None
            }
        })
        .collect()
}

fn parse_line(line: &str) -> Result<Sample, &'static str> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace()).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err("invalid metric name");
    }
    let mut rest = &line[name_end..];
    let mut labels = BTreeMap::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        rest = parse_labels(after_brace, &mut labels)?;
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = parse_value(value).ok_or("invalid value")?;
    if let Some(timestamp) = fields.next() {
        timestamp.parse::<i64>().map_err(|_| "invalid timestamp")?;
    }
    if fields.next().is_some() {
        return Err("trailing fields");
    }
    Ok(Sample { name: name.to_string(), labels, value })
}

/// Parses `a="x",b="y"}` into `labels`; returns what follows the closing brace.
fn parse_labels<'a>(mut rest: &'a str, labels: &mut BTreeMap<String, String>) -> Result<&'a str, &'static str> {
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('}') {
            return Ok(after);
        }
        let eq = rest.find('=').ok_or("label without value")?;
        let key = rest[..eq].trim();
        if !is_label_name(key) {
            return Err("invalid label name");
        }
        rest = rest[eq + 1..].trim_start().strip_prefix('"').ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err("unterminated label value"),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, '\\')) => value.push('\\'),
                    Some((_, '"')) => value.push('"'),
                    Some((_, other)) => {
                        value.push('\\');
                        value.push(other);
                    }
                    None => return Err("unterminated label value"),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.insert(key.to_string(), value);
        rest = rest[end + 1..].trim_start();
        if let Some(after) = rest.strip_prefix(',') {
            rest = after;
        } else if !rest.starts_with('}') {
            return Err("expected ',' or '}' after a label");
        }
    }
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn reads_samples_and_skips_comments() {
        let text = "# HELP wasmkube_http_requests Requests served.\n\
                    # TYPE wasmkube_http_requests counter\n\
                    \n\
                    wasmkube_http_requests_total{namespace=\"apps\",wasmapp=\"hello\"} 42\n\
                    up 1 1700000000000\n\
                    # EOF\n";
        let samples = parse(text);
        assert_eq!(
            samples,
            vec![
                Sample {
                    name: "wasmkube_http_requests_total".into(),
                    labels: labels(&[("namespace", "apps"), ("wasmapp", "hello")]),
                    value: 42.0
                },
                Sample { name: "up".into(), labels: BTreeMap::new(), value: 1.0 },
            ]
        );
    }

    #[test]
    fn unescapes_label_values() {
        let samples = parse(r#"m{a="say \"hi\"",b="back\\slash",c="line\nbreak", d = "{},=" } 1.5e1"#);
        assert_eq!(samples.len(), 1, "{samples:?}");
        assert_eq!(
            samples[0].labels,
            labels(&[("a", "say \"hi\""), ("b", "back\\slash"), ("c", "line\nbreak"), ("d", "{},=")])
        );
        assert_eq!(samples[0].value, 15.0);
    }

    #[test]
    fn trailing_comma_and_special_values() {
        let samples = parse("a{x=\"1\",} +Inf\nb NaN\nc -Inf\n");
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].labels, labels(&[("x", "1")]));
        assert!(samples[0].value.is_infinite() && samples[0].value > 0.0);
        assert!(samples[1].value.is_nan());
        assert_eq!(samples[2].value, f64::NEG_INFINITY);
    }

    #[test]
    fn skips_junk_lines_and_keeps_the_rest() {
        let text = "good 1\n\
                    no_value\n\
                    bad{a=\"unterminated} 1\n\
                    bad{a=unquoted} 1\n\
                    bad{a=\"x\" b=\"y\"} 1\n\
                    1bad 1\n\
                    bad not-a-number\n\
                    bad 1 not-a-timestamp\n\
                    bad 1 2 3\n\
                    {a=\"x\"} 1\n\
                    also_good{a=\"x\"} 2\n";
        let names: Vec<_> = parse(text).into_iter().map(|s| (s.name, s.value)).collect();
        assert_eq!(names, vec![("good".to_string(), 1.0), ("also_good".to_string(), 2.0)]);
    }
}
