//! How a command ends: what it prints on standard error and its exit status.
//!
//! Owns: the one-line form of every error (`qmwatch: WHAT`, as tcpdump
//! writes `tcpdump: missing.pcap: No such file or directory`), command-line
//! errors from clap folded into that one line, and the end of a run: the
//! summary only when something was read, then each error on its own
//! `qmwatch: error: …` line after it.
//!
//! Must not: decide whether something is an error (the pipeline, the policy
//! and clap do), or print anything on standard output.

use std::process::ExitCode;

use qmwatch_sensor::pipeline::RunReport;

/// Exit status of a command that failed.
pub const FAILURE: u8 = 2;

/// `msg` as one line: without the "(os error N)" decoration of I/O errors,
/// and with line breaks (a hostile file name may hold them) made visible.
pub fn clean(msg: &str) -> String {
    let mut s = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(" (os error ") {
        s.push_str(&rest[..i]);
        let after = &rest[i + " (os error ".len()..];
        match after.find(')') {
            Some(j) if after[..j].bytes().all(|b| b.is_ascii_digit()) => {
                rest = &after[j + 1..];
            }
            _ => {
                s.push_str(" (os error ");
                rest = after;
            }
        }
    }
    s.push_str(rest);
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Prints `qmwatch: MSG` on standard error.
pub fn print_error(msg: &str) {
    eprintln!("qmwatch: {}", clean(msg));
}

/// Prints one error line and returns the failure status.
pub fn fail(msg: &str) -> ExitCode {
    print_error(msg);
    ExitCode::from(FAILURE)
}

/// True when the run read no packet at all and failed: there is nothing to
/// summarise, only the errors to say.
pub fn nothing_read(report: &RunReport) -> bool {
    report.decode.frames == 0 && !report.errors.is_empty()
}

/// The end of a replay or live run: the summary (unless `quiet`, or nothing
/// was read), then every error on its own line. 0 without errors, 2 with.
pub fn finish_run(report: &RunReport, quiet: bool) -> ExitCode {
    let summary = !quiet && !nothing_read(report);
    if summary {
        eprint!("{}", crate::summary::summary(report));
    }
    report_errors(&report.errors, summary);
    if report.errors.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FAILURE)
    }
}

/// Each error as `qmwatch: error: …` after a summary or report, or
/// `qmwatch: …` when it is all there is to say.
pub fn report_errors(errors: &[String], after_summary: bool) {
    for e in errors {
        if after_summary {
            eprintln!("qmwatch: error: {}", clean(e));
        } else {
            print_error(e);
        }
    }
}

/// A command-line error from clap as one line (`--help` and `--version`
/// are printed as clap prints them, on standard output, status 0). `cmd`
/// names the subcommands when none was given.
pub fn clap_error(e: clap::Error, cmd: &clap::Command) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            let names: Vec<&str> = cmd
                .get_subcommands()
                .filter(|c| !c.is_hide_set())
                .map(|c| c.get_name())
                .collect();
            return fail(&format!(
                "a subcommand is required: {} (see {} --help)",
                names.join(", "),
                cmd.get_name()
            ));
        }
        _ => {}
    }
    let text = e.render().to_string();
    eprintln!("qmwatch: {}", one_line(&text));
    ExitCode::from(FAILURE)
}

/// clap's rendered error (`error: …`, context lines, a tip, `Usage: …`, a
/// pointer to --help) folded into `WHAT (usage: …)`.
pub fn one_line(text: &str) -> String {
    let mut what: Vec<&str> = Vec::new();
    let mut usage = None;
    let mut in_usage = false;
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with("tip:") || t.starts_with("For more information") {
            in_usage = false;
            continue;
        }
        if let Some(u) = t.strip_prefix("Usage:") {
            usage = Some(u.trim().to_string());
            in_usage = true;
            continue;
        }
        if in_usage {
            // Help printed for a missing subcommand: only the usage matters.
            continue;
        }
        what.push(t.strip_prefix("error:").map(str::trim).unwrap_or(t));
    }
    let mut s = what.join(" ");
    if s.is_empty() {
        s = "a subcommand is required".into();
    }
    if let Some(u) = usage {
        s.push_str(&format!(" (usage: {u}; see --help)"));
    }
    clean(&s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_error_decoration_and_line_breaks_go() {
        assert_eq!(
            clean("a.pcap: No such file or directory (os error 2)"),
            "a.pcap: No such file or directory"
        );
        assert_eq!(clean("x (os error y)"), "x (os error y)");
        assert_eq!(clean("evil\nname: x"), "evil name: x");
    }

    #[test]
    fn clap_errors_fold_into_one_line() {
        let t = "error: the following required arguments were not provided:\n  <CAPTURE>...\n\nUsage: qmwatch replay <CAPTURE>...\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(t),
            "the following required arguments were not provided: <CAPTURE>... (usage: qmwatch replay <CAPTURE>...; see --help)"
        );
        let t = "error: unexpected argument '--bogus' found\n\n  tip: to pass '--bogus' as a value, use '-- --bogus'\n\nUsage: qmwatch replay [OPTIONS] <CAPTURE>...\n\nFor more information, try '--help'.\n";
        assert!(one_line(t).starts_with("unexpected argument '--bogus' found (usage: "));
    }
}
