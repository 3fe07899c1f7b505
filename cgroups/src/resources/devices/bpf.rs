//! cgroup v2 device rules: a BPF_PROG_TYPE_CGROUP_DEVICE program generated from a
//! [`DeviceState`], loaded with bpf(BPF_PROG_LOAD) and attached to the container's directory
//! with BPF_F_ALLOW_MULTI. The kernel runs it on every open/mknod of a device node by a
//! process of the cgroup (or below it) and denies the access when it returns 0.
//!
//! Update without a gap: the new program is attached first and only then the previous one of
//! ours is detached (found with BPF_PROG_QUERY and recognised by its name). While both are
//! attached an access has to pass both, so nothing that the old and the new rules both allow
//! is ever refused, and nothing is allowed that either refuses.

use super::emulator::{DevType, DeviceState, ACC_ALL};
use crate::error::{Error, Result};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

const FIELD: &str = "linux.resources.devices";
/// Our programs' name (at most 15 bytes), how an update tells its own from foreign ones.
pub(crate) const PROG_NAME: &str = "oci_devices";

// ---- instructions (include/uapi/linux/bpf.h, bpf_common.h) ----

/// struct bpf_insn: opcode, dst (low nibble) and src (high nibble) registers, offset, imm.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub regs: u8,
    pub off: i16,
    pub imm: i32,
}

const R0: u8 = 0; // return value
const R1: u8 = 1; // context: struct bpf_cgroup_dev_ctx { u32 access_type, major, minor }
const R2: u8 = 2; // device type (BPF_DEVCG_DEV_BLOCK 1, _CHAR 2)
const R3: u8 = 3; // requested access bits (BPF_DEVCG_ACC_MKNOD 1, _READ 2, _WRITE 4)
const R4: u8 = 4; // major
const R5: u8 = 5; // minor
const R6: u8 = 6; // scratch

pub(crate) const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W: dst = *(u32 *)(src + off)
pub(crate) const MOV_K: u8 = 0xb7; // BPF_ALU64 | BPF_MOV | BPF_K: dst = imm
pub(crate) const MOV_X: u8 = 0xbf; // BPF_ALU64 | BPF_MOV | BPF_X: dst = src
pub(crate) const AND_K: u8 = 0x57; // BPF_ALU64 | BPF_AND | BPF_K: dst &= imm
pub(crate) const RSH_K: u8 = 0x77; // BPF_ALU64 | BPF_RSH | BPF_K: dst >>= imm
pub(crate) const JEQ_K: u8 = 0x15; // BPF_JMP | BPF_JEQ | BPF_K: if dst == imm goto pc+1+off
pub(crate) const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K: if dst != imm goto pc+1+off
pub(crate) const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT: return r0

fn ins(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

/// The program for `state`. One block per exception, each falling through to the next on a
/// mismatch; a match returns the opposite of the default; after the last block the default.
///
/// ```text
///   r2 = ctx->access_type; r3 = r2 >> 16; r2 &= 0xffff; r4 = ctx->major; r5 = ctx->minor
///   ; exception "c 1:3 rw" of a deny-by-default state:
///   if r2 != 2 goto next; if r4 != 1 goto next; if r5 != 3 goto next
///   r6 = r3; r6 &= ~(r|w); if r6 != 0 goto next      ; something not granted was asked
///   r0 = 1; exit
/// next: ...
///   r0 = 0; exit
/// ```
pub(crate) fn program(state: &DeviceState) -> Vec<Insn> {
    let mut p = vec![
        ins(LDX_W, R2, R1, 0, 0),
        ins(MOV_X, R3, R2, 0, 0),
        ins(RSH_K, R3, 0, 0, 16),
        ins(AND_K, R2, 0, 0, 0xffff),
        ins(LDX_W, R4, R1, 4, 0),
        ins(LDX_W, R5, R1, 8, 0),
    ];
    for (key, access) in &state.exceptions {
        let mut block = Vec::new();
        // Indices of the jumps that leave the block; their offsets are set once its length
        // is known.
        let mut to_next = Vec::new();
        let typ = if key.typ == DevType::Block { 1 } else { 2 };
        to_next.push(block.len());
        block.push(ins(JNE_K, R2, 0, 0, typ));
        for (reg, n) in [(R4, key.major), (R5, key.minor)] {
            if let Some(n) = n {
                to_next.push(block.len());
                block.push(ins(JNE_K, reg, 0, 0, n as i32));
            }
        }
        if *access != ACC_ALL {
            block.push(ins(MOV_X, R6, R3, 0, 0));
            if state.default_allow {
                // A deny exception applies when the request touches any of its bits.
                block.push(ins(AND_K, R6, 0, 0, i32::from(*access)));
                to_next.push(block.len());
                block.push(ins(JEQ_K, R6, 0, 0, 0));
            } else {
                // An allow exception applies when it grants every requested bit.
                block.push(ins(AND_K, R6, 0, 0, i32::from(!access & ACC_ALL)));
                to_next.push(block.len());
                block.push(ins(JNE_K, R6, 0, 0, 0));
            }
        }
        block.push(ins(MOV_K, R0, 0, 0, i32::from(!state.default_allow)));
        block.push(ins(EXIT, 0, 0, 0, 0));
        let len = block.len();
        for i in to_next {
            block[i].off = (len - i - 1) as i16;
        }
        p.extend(block);
    }
    p.push(ins(MOV_K, R0, 0, 0, i32::from(state.default_allow)));
    p.push(ins(EXIT, 0, 0, 0, 0));
    p
}

// ---- the bpf(2) system call ----

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

/// The leading members of `union bpf_attr` that each command uses (the kernel accepts a
/// shorter attr and zero-fills the rest).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
}

#[repr(C)]
#[derive(Default)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct InfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// The start of struct bpf_prog_info, up to the name.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    typ: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: attr is a live, initialised #[repr(C)] prefix of union bpf_attr and the size
    // passed is its own; pointers inside it point at buffers the caller keeps alive.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

fn sys_err(call: String, source: io::Error) -> Error {
    Error::Syscall {
        field: FIELD.into(),
        call,
        source,
    }
}

fn load(insns: &[Insn]) -> Result<OwnedFd> {
    let license = c"Apache-2.0";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..Default::default()
    };
    attr.prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
    match bpf(BPF_PROG_LOAD, &mut attr) {
        // SAFETY: BPF_PROG_LOAD returns a new descriptor.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            // Load again with the verifier's log so the error says why.
            let mut log = vec![0u8; 64 * 1024];
            attr.log_level = 1;
            attr.log_size = log.len() as u32;
            attr.log_buf = log.as_mut_ptr() as u64;
            let _ = bpf(BPF_PROG_LOAD, &mut attr);
            let end = log.iter().position(|b| *b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
            Err(sys_err(
                format!(
                    "bpf(BPF_PROG_LOAD) of {} instructions (verifier: {text:?})",
                    insns.len()
                ),
                e,
            ))
        }
    }
}

/// Our programs attached directly to the cgroup (not inherited ones), as open descriptors.
fn ours_attached(cg: RawFd, dir: &Path) -> Result<Vec<OwnedFd>> {
    let mut ids = [0u32; 64];
    let mut q = QueryAttr {
        target_fd: cg as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..Default::default()
    };
    bpf(BPF_PROG_QUERY, &mut q)
        .map_err(|e| sys_err(format!("bpf(BPF_PROG_QUERY) on {}", dir.display()), e))?;
    let mut out = Vec::new();
    for id in &ids[..(q.prog_cnt as usize).min(ids.len())] {
        let mut a = GetFdByIdAttr {
            prog_id: *id,
            ..Default::default()
        };
        let fd = match bpf(BPF_PROG_GET_FD_BY_ID, &mut a) {
            // SAFETY: a new descriptor.
            Ok(fd) => unsafe { OwnedFd::from_raw_fd(fd as RawFd) },
            // Detached meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(sys_err(format!("bpf(BPF_PROG_GET_FD_BY_ID {id})"), e)),
        };
        let mut info = ProgInfo::default();
        let mut ia = InfoAttr {
            bpf_fd: fd.as_raw_fd() as u32,
            info_len: std::mem::size_of::<ProgInfo>() as u32,
            info: &mut info as *mut ProgInfo as u64,
        };
        bpf(BPF_OBJ_GET_INFO_BY_FD, &mut ia)
            .map_err(|e| sys_err(format!("bpf(BPF_OBJ_GET_INFO_BY_FD) of program {id}"), e))?;
        let name = info.name.split(|b| *b == 0).next().unwrap_or_default();
        if name == PROG_NAME.as_bytes() {
            out.push(fd);
        } else {
            log::info!(
                "{FIELD}: keeping device program {id} ({:?}) that another tool attached to {}",
                String::from_utf8_lossy(name),
                dir.display()
            );
        }
    }
    Ok(out)
}

fn attach(op: libc::c_long, cg: RawFd, prog: RawFd, dir: &Path) -> Result<()> {
    let mut a = AttachAttr {
        target_fd: cg as u32,
        attach_bpf_fd: prog as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: if op == BPF_PROG_ATTACH {
            BPF_F_ALLOW_MULTI
        } else {
            0
        },
    };
    let name = if op == BPF_PROG_ATTACH {
        "BPF_PROG_ATTACH"
    } else {
        "BPF_PROG_DETACH"
    };
    bpf(op, &mut a)
        .map(|_| ())
        .map_err(|e| sys_err(format!("bpf({name}) on {}", dir.display()), e))
}

/// Makes `state` the device policy of the cgroup `dir`, replacing our previous program.
pub(crate) fn install(dir: &Path, state: &DeviceState) -> Result<()> {
    let insns = program(state);
    let prog = load(&insns)?;
    let c = CString::new(dir.as_os_str().as_bytes()).unwrap_or_default();
    // SAFETY: NUL-terminated path; the result is checked.
    let cg = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if cg < 0 {
        return Err(Error::syscall(FIELD, format!("open {}", dir.display())));
    }
    // SAFETY: fresh descriptor.
    let cg = unsafe { OwnedFd::from_raw_fd(cg) };
    let old = ours_attached(cg.as_raw_fd(), dir)?;
    attach(BPF_PROG_ATTACH, cg.as_raw_fd(), prog.as_raw_fd(), dir)?;
    for o in &old {
        attach(BPF_PROG_DETACH, cg.as_raw_fd(), o.as_raw_fd(), dir)?;
    }
    log::debug!(
        "{FIELD}: attached a {}-instruction device program to {} ({}), replaced {}",
        insns.len(),
        dir.display(),
        state.describe(),
        old.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::emulator::{DevType, DeviceState, Key, Rule, ACC_MKNOD, ACC_READ, ACC_WRITE};
    use super::*;

    /// Runs the program the way the kernel would, for the instructions we emit.
    fn run(p: &[Insn], typ: u32, access: u32, major: u32, minor: u32) -> u64 {
        let ctx = [(access << 16) | typ, major, minor];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = ((i.regs & 0xf) as usize, (i.regs >> 4) as usize);
            pc += 1;
            let jump = |cond: bool, pc: &mut usize| {
                if cond {
                    *pc = (*pc as i64 + i.off as i64) as usize
                }
            };
            match i.code {
                LDX_W => {
                    assert_eq!(src, 1);
                    r[dst] = ctx[i.off as usize / 4] as u64
                }
                MOV_K => r[dst] = i.imm as i64 as u64,
                MOV_X => r[dst] = r[src],
                AND_K => r[dst] &= i.imm as i64 as u64,
                RSH_K => r[dst] >>= i.imm,
                JEQ_K => jump(r[dst] == i.imm as i64 as u64, &mut pc),
                JNE_K => jump(r[dst] != i.imm as i64 as u64, &mut pc),
                EXIT => return r[0],
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    fn rule(allow: bool, typ: DevType, major: Option<u32>, minor: Option<u32>, access: u8) -> Rule {
        Rule::Dev {
            allow,
            key: Key { typ, major, minor },
            access,
        }
    }

    /// The program agrees with the v1 model on every device/access combination tried.
    #[test]
    fn program_matches_the_v1_semantics() {
        use DevType::{Block, Char};
        let sets = vec![
            vec![
                rule(true, Char, Some(1), Some(3), ACC_ALL),
                rule(true, Char, Some(1), Some(5), ACC_READ),
            ],
            vec![
                rule(true, Char, None, None, ACC_MKNOD),
                rule(true, Block, Some(8), None, ACC_READ | ACC_WRITE),
            ],
            vec![
                Rule::All { allow: true },
                rule(false, Char, Some(1), Some(3), ACC_WRITE),
            ],
            vec![
                Rule::All { allow: true },
                rule(false, Block, None, None, ACC_ALL),
            ],
            vec![],
            vec![Rule::All { allow: true }],
        ];
        for rules in sets {
            let s = DeviceState::from_rules(&rules);
            let p = program(&s);
            for (typ, t) in [(Block, 1), (Char, 2)] {
                for (major, minor) in [(1, 3), (1, 5), (8, 0), (8, 1), (4, 3)] {
                    for access in 1..=7u8 {
                        let want = s.permits(typ, major, minor, access);
                        let got = run(&p, t, access as u32, major, minor) == 1;
                        assert_eq!(
                            got, want,
                            "{rules:?} {typ:?} {major}:{minor} access {access}"
                        );
                    }
                }
            }
        }
    }
}
