//! The CRI container log format: `TIMESTAMP STREAM TAG CONTENT`, where TAG is `F` (full line) or
//! `P` (partial: the line continues in the next entry).

/// One logical line of a container's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriLogLine {
    /// `stdout` or `stderr`.
    pub stream: String,
    /// The line without its newline, partial entries joined.
    pub text: String,
}

/// Parses a CRI log file into logical lines; malformed entries are skipped.
pub fn parse_cri_log(text: &str) -> Vec<CriLogLine> {
    let mut lines = Vec::new();
    // Partial entries per stream, waiting for their full (`F`) end.
    let mut pending: Vec<(String, String)> = Vec::new();
    for entry in text.lines() {
        let mut parts = entry.splitn(4, ' ');
        let (Some(_ts), Some(stream), Some(tag)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let content = parts.next().unwrap_or("");
        let at = pending.iter().position(|(s, _)| s == stream);
        let mut buf = at.map(|i| pending.remove(i).1).unwrap_or_default();
        buf.push_str(content);
        if tag == "P" {
            pending.push((stream.to_string(), buf));
        } else {
            lines.push(CriLogLine { stream: stream.to_string(), text: buf });
        }
    }
    lines
}

/// The lines of one stream.
pub fn stream_lines<'a>(lines: &'a [CriLogLine], stream: &str) -> Vec<&'a str> {
    lines.iter().filter(|l| l.stream == stream).map(|l| l.text.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_partial_entries_become_lines() {
        let text = "2026-01-01T00:00:00.1Z stdout F hello\n\
                    2026-01-01T00:00:00.2Z stderr P par\n\
                    2026-01-01T00:00:00.3Z stdout F \n\
                    2026-01-01T00:00:00.4Z stderr F tial line\n";
        let lines = parse_cri_log(text);
        assert_eq!(stream_lines(&lines, "stdout"), ["hello", ""]);
        assert_eq!(stream_lines(&lines, "stderr"), ["partial line"]);
    }
}
