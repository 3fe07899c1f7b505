//! `testdata`: the fixtures of the `testdata` library for shell scripts.
//!
//! Arguments are parsed by hand so the crate stays dependency-light (it is
//! built for every test run).

use std::path::PathBuf;
use std::process::ExitCode;

use testdata::{
    build_image_archive, build_image_archive_with_cmd, build_rootfs, Bundle, DEFAULT_REFERENCE,
};

const USAGE: &str = "\
usage:
  testdata rootfs DIR                  busybox rootfs in DIR
  testdata bundle DIR [-- CMD ARGS...] rootfs + config.json (runc spec, terminal
                                       off, args CMD ARGS or sh) in DIR
  testdata image OUT.tar [REF]         OCI image archive (oci-archive) for
                                       `ctr images import` and `podman load -i`;
                                       REF defaults to docker.io/library/busybox:latest
  testdata image OUT.tar REF -- CMD ARGS...
                                       the same with Cmd CMD ARGS (e.g. a CRI sandbox
                                       image: -- sleep 2147483647)
";

fn run(args: &[String]) -> Result<(), String> {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["-h" | "--help" | "help"] => {
            print!("{USAGE}");
            Ok(())
        }
        ["rootfs", dir] => {
            build_rootfs(&PathBuf::from(dir)).map_err(|e| format!("rootfs {dir}: {e}"))
        }
        ["bundle", dir, rest @ ..] => {
            let cmd: &[&str] = match rest {
                [] => &[],
                ["--", cmd @ ..] if !cmd.is_empty() => cmd,
                _ => return Err(format!("bundle: expected `-- CMD ARGS...`\n{USAGE}")),
            };
            let mut b =
                Bundle::in_dir(&PathBuf::from(dir)).map_err(|e| format!("bundle {dir}: {e}"))?;
            if !cmd.is_empty() {
                b.set_args(cmd);
                b.write_spec().map_err(|e| format!("bundle {dir}: {e}"))?;
            }
            Ok(())
        }
        ["image", out, reference, "--", cmd @ ..] if !cmd.is_empty() => {
            build_image_archive_with_cmd(&PathBuf::from(out), reference, cmd)
                .map_err(|e| format!("image {out}: {e}"))
        }
        ["image", out] | ["image", out, _] => {
            let reference = args.get(2).copied().unwrap_or(DEFAULT_REFERENCE);
            build_image_archive(&PathBuf::from(out), reference)
                .map_err(|e| format!("image {out}: {e}"))
        }
        _ => Err(USAGE.to_owned()),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("testdata: {e}");
            ExitCode::from(2)
        }
    }
}
