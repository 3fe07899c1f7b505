//! seccomp through libseccomp: actions, errno returns, argument filters,
//! flags, architectures, and the user-notification listener.

use std::os::fd::RawFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("linux.seccomp.{field}: {source}")]
    Lib {
        field: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("linux.seccomp.{field}: {message}")]
    Invalid { field: String, message: String },
}

fn lib(field: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let field = field.into();
    move |source| SeccompError::Lib { field, source }
}

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> ScmpAction {
    match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => {
            ScmpAction::Errno(errno.map(|e| e as i32).unwrap_or(libc::EPERM))
        }
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
        LinuxSeccompAction::ScmpActTrace => {
            ScmpAction::Trace(errno.map(|e| e as u16).unwrap_or(libc::EPERM as u16))
        }
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
    }
}

fn arch(a: Arch) -> ScmpArch {
    match a {
        Arch::ScmpArchNative => ScmpArch::Native,
        Arch::ScmpArchX86 => ScmpArch::X86,
        Arch::ScmpArchX86_64 => ScmpArch::X8664,
        Arch::ScmpArchX32 => ScmpArch::X32,
        Arch::ScmpArchArm => ScmpArch::Arm,
        Arch::ScmpArchAarch64 => ScmpArch::Aarch64,
        Arch::ScmpArchMips => ScmpArch::Mips,
        Arch::ScmpArchMips64 => ScmpArch::Mips64,
        Arch::ScmpArchMips64n32 => ScmpArch::Mips64N32,
        Arch::ScmpArchMipsel => ScmpArch::Mipsel,
        Arch::ScmpArchMipsel64 => ScmpArch::Mipsel64,
        Arch::ScmpArchMipsel64n32 => ScmpArch::Mipsel64N32,
        Arch::ScmpArchPpc => ScmpArch::Ppc,
        Arch::ScmpArchPpc64 => ScmpArch::Ppc64,
        Arch::ScmpArchPpc64le => ScmpArch::Ppc64Le,
        Arch::ScmpArchS390 => ScmpArch::S390,
        Arch::ScmpArchS390x => ScmpArch::S390X,
        Arch::ScmpArchRiscv64 => ScmpArch::Riscv64,
        #[allow(unreachable_patterns)]
        _ => ScmpArch::Native,
    }
}

fn op(o: LinuxSeccompOperator) -> ScmpCompareOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => unreachable!("handled by the caller"),
    }
}

/// Builds the filter from the spec. Built before it is loaded so that a bad
/// profile is reported at `create`, not as a dead container.
pub fn build(s: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
    let default = action(s.default_action(), s.default_errno_ret());
    let mut ctx = ScmpFilterContext::new_filter(default).map_err(lib("defaultAction"))?;
    for a in s.architectures().iter().flatten() {
        ctx.add_arch(arch(*a)).map_err(lib("architectures"))?;
    }
    for f in s.flags().iter().flatten() {
        match f {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => {
                ctx.set_ctl_log(true).map_err(lib("flags"))?
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                ctx.set_ctl_ssb(true).map_err(lib("flags"))?
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => {
                ctx.set_ctl_tsync(true).map_err(lib("flags"))?
            }
        }
    }
    // The runtime decides about no_new_privs itself (process.noNewPrivileges).
    ctx.set_ctl_nnp(false).map_err(lib("flags"))?;
    for (i, rule) in s.syscalls().iter().flatten().enumerate() {
        let act = action(rule.action(), rule.errno_ret());
        if act == default {
            continue; // libseccomp refuses rules equal to the default action
        }
        // For masked-equal the spec puts the mask in `value` and the datum in `valueTwo`.
        let args: Vec<ScmpArgCompare> = rule
            .args()
            .iter()
            .flatten()
            .map(|a| {
                let (cmp, datum) = match a.op() {
                    LinuxSeccompOperator::ScmpCmpMaskedEq => (
                        ScmpCompareOp::MaskedEqual(a.value()),
                        a.value_two().unwrap_or(0),
                    ),
                    o => (op(o), a.value()),
                };
                ScmpArgCompare::new(a.index() as u32, cmp, datum)
            })
            .collect();
        for name in rule.names() {
            let sc = match ScmpSyscall::from_name(name) {
                Ok(sc) => sc,
                Err(_) => {
                    log::debug!("seccomp: unknown syscall {name:?} skipped");
                    continue;
                }
            };
            let res = if args.is_empty() {
                ctx.add_rule(act, sc)
            } else {
                ctx.add_rule_conditional(act, sc, &args)
            };
            res.map_err(lib(format!("syscalls[{i}] ({name})")))?;
        }
    }
    Ok(ctx)
}

/// Whether the profile asks for user notification (needs a listener).
pub fn uses_notify(s: &LinuxSeccomp) -> bool {
    s.default_action() == LinuxSeccompAction::ScmpActNotify
        || s.syscalls()
            .iter()
            .flatten()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// Loads the filter into the calling thread; returns the notify fd if any.
pub fn load(ctx: &ScmpFilterContext, notify: bool) -> Result<Option<RawFd>, SeccompError> {
    ctx.load().map_err(lib("load"))?;
    if notify {
        let fd = ctx.get_notify_fd().map_err(lib("listenerPath"))?;
        return Ok(Some(fd));
    }
    Ok(None)
}

pub fn validate(s: &LinuxSeccomp) -> Result<(), SeccompError> {
    if uses_notify(s) && s.listener_path().is_none() {
        return Err(SeccompError::Invalid {
            field: "listenerPath".into(),
            message: "SCMP_ACT_NOTIFY is used but no listenerPath is set".into(),
        });
    }
    Ok(())
}
