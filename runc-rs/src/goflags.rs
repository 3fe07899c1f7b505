//! runc parses its command line the Go way: `-name` means the same as
//! `--name`, and flags end at the first positional argument. Callers rely
//! on it (containerd's go-runc passes `-no-subreaper` to `restore`), while
//! clap only knows `--name`. So the arguments are rewritten before clap sees
//! them, using the command's own definition to tell which flags take a value
//! and where the positional arguments (a container's command line, say,
//! which must never be touched) begin.

use std::ffi::OsString;

use clap::{Arg, Command};

/// Whether any argument looks like a Go-style long flag (`-ab...`): only
/// then is the command definition built to rewrite them (it costs time
/// on every run otherwise).
pub fn may_need(args: &[OsString]) -> bool {
    args.iter().skip(1).any(|a| {
        let b = a.as_encoded_bytes();
        b.len() > 2 && b[0] == b'-' && b[1] != b'-'
    })
}

/// `args` (with the program name first) with every Go-style `-long[=v]`
/// flag before the first positional argument turned into `--long[=v]`.
pub fn normalize(root: &Command, args: Vec<OsString>) -> Vec<OsString> {
    let mut out = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    out.extend(it.next());
    let mut cmd = root;
    let mut in_sub = false;
    while let Some(a) = it.next() {
        let Some(s) = a.to_str().map(str::to_owned) else {
            out.push(a);
            break;
        };
        if s == "--" || !s.starts_with('-') || s == "-" {
            // A subcommand name continues flag parsing; anything else is the
            // first positional.
            if !in_sub && s != "--" {
                if let Some(sub) = subcommand(cmd, &s) {
                    out.push(a);
                    cmd = sub;
                    in_sub = true;
                    continue;
                }
            }
            out.push(a);
            break;
        }
        let (flag, takes_value) = if let Some(long) = s.strip_prefix("--") {
            (
                s.clone(),
                long_arg(cmd, root, name(long)).is_some_and(takes),
            )
        } else if s.len() > 2 {
            let long = &s[1..];
            match long_arg(cmd, root, name(long)) {
                Some(arg) => (format!("-{s}"), takes(arg)),
                // `-pVALUE`: a short flag with its value attached.
                None => (s.clone(), false),
            }
        } else {
            let short = s.chars().nth(1).unwrap_or('-');
            (s.clone(), short_arg(cmd, root, short).is_some_and(takes))
        };
        out.push(flag.into());
        if takes_value && !s.contains('=') {
            out.extend(it.next());
        }
    }
    out.extend(it);
    out
}

fn name(flag: &str) -> &str {
    flag.split_once('=').map_or(flag, |(n, _)| n)
}

fn takes(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}

fn subcommand<'a>(cmd: &'a Command, name: &str) -> Option<&'a Command> {
    cmd.get_subcommands()
        .find(|c| c.get_name() == name || c.get_all_aliases().any(|a| a == name))
}

fn long_arg<'a>(cmd: &'a Command, root: &'a Command, name: &str) -> Option<&'a Arg> {
    let find = |c: &'a Command| {
        c.get_arguments().find(|a| {
            a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|al| al.contains(&name))
        })
    };
    find(cmd).or_else(|| find(root).filter(|a| a.is_global_set()))
}

fn short_arg<'a>(cmd: &'a Command, root: &'a Command, short: char) -> Option<&'a Arg> {
    let find = |c: &'a Command| c.get_arguments().find(|a| a.get_short() == Some(short));
    find(cmd).or_else(|| find(root).filter(|a| a.is_global_set()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Command {
        Command::new("runc")
            .arg(Arg::new("root").long("root"))
            .arg(
                Arg::new("debug")
                    .long("debug")
                    .action(clap::ArgAction::SetTrue),
            )
            .subcommand(
                Command::new("restore")
                    .arg(Arg::new("bundle").short('b').long("bundle"))
                    .arg(
                        Arg::new("no-subreaper")
                            .long("no-subreaper")
                            .action(clap::ArgAction::SetTrue),
                    )
                    .arg(
                        Arg::new("detach")
                            .short('d')
                            .long("detach")
                            .action(clap::ArgAction::SetTrue),
                    )
                    .arg(Arg::new("id")),
            )
            .subcommand(
                Command::new("exec")
                    .arg(Arg::new("env").short('e').long("env"))
                    .arg(Arg::new("id"))
                    .arg(
                        Arg::new("cmd")
                            .num_args(0..)
                            .trailing_var_arg(true)
                            .allow_hyphen_values(true),
                    ),
            )
    }

    fn run(args: &[&str]) -> Vec<String> {
        let v = args.iter().map(OsString::from).collect();
        normalize(&cli(), v)
            .into_iter()
            .map(|s| s.into_string().unwrap())
            .collect()
    }

    #[test]
    fn single_dash_long_flags_become_double_dash() {
        assert_eq!(
            run(&[
                "runc",
                "-root",
                "/r",
                "-debug",
                "restore",
                "-no-subreaper",
                "-bundle=/b",
                "-d",
                "id"
            ]),
            [
                "runc",
                "--root",
                "/r",
                "--debug",
                "restore",
                "--no-subreaper",
                "--bundle=/b",
                "-d",
                "id"
            ]
        );
    }

    #[test]
    fn flag_values_and_the_container_command_are_left_alone() {
        // `-root` is the value of --env; `-debug` belongs to the command.
        assert_eq!(
            run(&["runc", "exec", "--env", "-root", "-e", "-debug", "id", "ls", "-debug", "-la"]),
            ["runc", "exec", "--env", "-root", "-e", "-debug", "id", "ls", "-debug", "-la"]
        );
    }

    #[test]
    fn only_go_style_words_need_the_rewrite() {
        let v = |a: &[&str]| a.iter().map(OsString::from).collect::<Vec<_>>();
        assert!(!may_need(&v(&[
            "runc", "--root", "/r", "exec", "-t", "id", "sh", "-c", "x"
        ])));
        assert!(may_need(&v(&["runc", "restore", "-no-subreaper", "id"])));
    }

    #[test]
    fn unknown_single_dash_words_are_left_for_clap() {
        assert_eq!(
            run(&["runc", "restore", "-bogus", "id"]),
            ["runc", "restore", "-bogus", "id"]
        );
    }
}
