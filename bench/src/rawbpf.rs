//! Just enough of the bpf(2) syscall to load hand-assembled XDP programs and run any program with
//! `BPF_PROG_TEST_RUN`: the floor program, the trivial target and the restoring wrapper of the
//! per-packet benchmark are a few dozen instructions each, which is simpler than a second eBPF
//! crate (and leaves dns-ebpf alone).

use std::{
    ffi::CString,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd},
    path::Path,
};

use anyhow::{bail, Context as _, Result};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_OBJ_PIN: libc::c_long = 6;
const BPF_PROG_TEST_RUN: libc::c_long = 10;
const BPF_PROG_TYPE_XDP: u32 = 6;
const BPF_MAP_TYPE_PROG_ARRAY: u32 = 3;
/// `expected_attach_type` of XDP programs loaded for links (what aya sets for `Xdp`).
pub const BPF_XDP: u32 = 37;

pub const XDP_ABORTED: i32 = 0;
pub const XDP_PASS: i32 = 2;
pub const XDP_TX: i32 = 3;

/// Helper ids (include/uapi/linux/bpf.h `__BPF_FUNC_MAPPER`).
const FN_TAIL_CALL: i32 = 12;
const FN_XDP_ADJUST_TAIL: i32 = 65;

/// One instruction: `code | dst | src | off | imm` as the kernel lays out `struct bpf_insn`.
#[derive(Clone, Copy, Debug)]
pub struct Insn(pub u64);

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn(
        code as u64
            | ((dst as u64 & 0xf) << 8)
            | ((src as u64 & 0xf) << 12)
            | ((off as u16 as u64) << 16)
            | ((imm as u32 as u64) << 32),
    )
}

/// Memory access sizes.
#[derive(Clone, Copy)]
pub enum Size {
    B,
    H,
    W,
}

impl Size {
    const fn bits(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
        }
    }
}

pub mod asm {
    use super::*;
    /// `dst = *(size *)(src + off)`
    pub const fn ldx(size: Size, dst: u8, src: u8, off: i16) -> Insn {
        insn(0x61 | size.bits(), dst, src, off, 0)
    }
    /// `*(size *)(dst + off) = src`
    pub const fn stx(size: Size, dst: u8, src: u8, off: i16) -> Insn {
        insn(0x63 | size.bits(), dst, src, off, 0)
    }
    /// `*(size *)(dst + off) = imm`
    pub const fn st(size: Size, dst: u8, off: i16, imm: i32) -> Insn {
        insn(0x62 | size.bits(), dst, 0, off, imm)
    }
    /// `dst = src` (64-bit)
    pub const fn mov(dst: u8, src: u8) -> Insn {
        insn(0xbf, dst, src, 0, 0)
    }
    /// `dst = imm` (64-bit)
    pub const fn movi(dst: u8, imm: i32) -> Insn {
        insn(0xb7, dst, 0, 0, imm)
    }
    /// `dst += imm`
    pub const fn addi(dst: u8, imm: i32) -> Insn {
        insn(0x07, dst, 0, 0, imm)
    }
    /// `dst -= src`
    pub const fn sub(dst: u8, src: u8) -> Insn {
        insn(0x1f, dst, src, 0, 0)
    }
    /// `if dst > src goto +off` (unsigned)
    pub const fn jgt(dst: u8, src: u8, off: i16) -> Insn {
        insn(0x2d, dst, src, off, 0)
    }
    /// `if dst == imm goto +off`
    pub const fn jeqi(dst: u8, imm: i32, off: i16) -> Insn {
        insn(0x15, dst, 0, off, imm)
    }
    pub const fn call(helper: i32) -> Insn {
        insn(0x85, 0, 0, 0, helper)
    }
    pub const fn exit() -> Insn {
        insn(0x95, 0, 0, 0, 0)
    }
    /// `dst = map` (`BPF_LD | BPF_IMM | BPF_DW` with `BPF_PSEUDO_MAP_FD`): two slots.
    pub fn ld_map_fd(dst: u8, fd: i32) -> [Insn; 2] {
        [insn(0x18, dst, 1, 0, fd), insn(0, 0, 0, 0, 0)]
    }
}

use asm::*;

fn sys_bpf(cmd: libc::c_long, attr: &mut [u8; 128]) -> std::io::Result<i64> {
    // SAFETY: `attr` is a zero-filled `union bpf_attr` image of 128 bytes (the kernel reads at
    // most that many and requires the unused tail to be zero); pointers in it are live.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_mut_ptr(), attr.len() as u32) };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r as i64)
    }
}

fn put_u32(a: &mut [u8; 128], off: usize, v: u32) {
    a[off..off + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(a: &mut [u8; 128], off: usize, v: u64) {
    a[off..off + 8].copy_from_slice(&v.to_ne_bytes());
}
fn get_u32(a: &[u8; 128], off: usize) -> u32 {
    u32::from_ne_bytes(a[off..off + 4].try_into().expect("4 bytes"))
}

/// Loads an XDP program; on a verifier refusal the error carries the verifier's log.
pub fn load_xdp(name: &str, insns: &[Insn], xdp_has_frags: bool) -> Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let words: Vec<u64> = insns.iter().map(|i| i.0).collect();
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, BPF_PROG_TYPE_XDP);
    put_u32(&mut a, 4, words.len() as u32);
    put_u64(&mut a, 8, words.as_ptr() as u64);
    put_u64(&mut a, 16, license.as_ptr() as u64);
    put_u32(&mut a, 24, 1); // log_level
    put_u32(&mut a, 28, log.len() as u32);
    put_u64(&mut a, 32, log.as_mut_ptr() as u64);
    // BPF_F_XDP_HAS_FRAGS: a tail call target must agree with its caller on it.
    put_u32(&mut a, 44, if xdp_has_frags { 1 << 5 } else { 0 });
    let n = name.as_bytes();
    let n = &n[..n.len().min(15)];
    a[48..48 + n.len()].copy_from_slice(n);
    put_u32(&mut a, 68, BPF_XDP);
    match sys_bpf(BPF_PROG_LOAD, &mut a) {
        // SAFETY: a new fd the kernel just gave us.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            bail!(
                "BPF_PROG_LOAD {name}: {e}\n{}",
                String::from_utf8_lossy(&log[..end])
            )
        }
    }
}

/// A one-slot `BPF_MAP_TYPE_PROG_ARRAY`.
pub fn prog_array() -> Result<OwnedFd> {
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, BPF_MAP_TYPE_PROG_ARRAY);
    put_u32(&mut a, 4, 4);
    put_u32(&mut a, 8, 4);
    put_u32(&mut a, 12, 1);
    let fd = sys_bpf(BPF_MAP_CREATE, &mut a).context("BPF_MAP_CREATE prog array")?;
    // SAFETY: a new fd the kernel just gave us.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Puts `prog` in slot 0 of a prog array.
pub fn set_tail(map: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> Result<()> {
    let key: u32 = 0;
    let value: u32 = prog.as_raw_fd() as u32;
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, map.as_raw_fd() as u32);
    put_u64(&mut a, 8, &key as *const u32 as u64);
    put_u64(&mut a, 16, &value as *const u32 as u64);
    sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a)
        .context("BPF_MAP_UPDATE_ELEM prog array (is the target a compatible XDP program?)")?;
    Ok(())
}

/// Pins a program in bpffs (so that `ip link set dev X xdpdrv pinned PATH` can attach it).
pub fn pin(fd: BorrowedFd<'_>, path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())?;
    let mut a = [0u8; 128];
    put_u64(&mut a, 0, c.as_ptr() as u64);
    put_u32(&mut a, 8, fd.as_raw_fd() as u32);
    sys_bpf(BPF_OBJ_PIN, &mut a).with_context(|| format!("BPF_OBJ_PIN {}", path.display()))?;
    Ok(())
}

/// What one `BPF_PROG_TEST_RUN` returned.
#[derive(Debug, Clone)]
pub struct TestRun {
    pub retval: u32,
    /// Mean time of one run in ns, as the kernel measured it (`duration` / `repeat`, rounded
    /// down to whole ns).
    pub ns_per_run: f64,
    /// Wall time of the whole syscall, in ns.
    pub wall_ns: f64,
    pub out: Vec<u8>,
}

/// Runs `prog` `repeat` times on `frame`. The kernel reports the mean duration of one run in
/// whole ns; the syscall's wall time is returned too, for a finer figure.
pub fn test_run(prog: BorrowedFd<'_>, frame: &[u8], repeat: u32) -> Result<TestRun> {
    let mut out = vec![0u8; 4096];
    let mut a = [0u8; 128];
    put_u32(&mut a, 0, prog.as_raw_fd() as u32);
    put_u32(&mut a, 8, frame.len() as u32);
    put_u32(&mut a, 12, out.len() as u32);
    put_u64(&mut a, 16, frame.as_ptr() as u64);
    put_u64(&mut a, 24, out.as_mut_ptr() as u64);
    put_u32(&mut a, 32, repeat);
    let t = std::time::Instant::now();
    sys_bpf(BPF_PROG_TEST_RUN, &mut a).context("BPF_PROG_TEST_RUN")?;
    let wall = t.elapsed();
    let retval = get_u32(&a, 4);
    let size_out = get_u32(&a, 12) as usize;
    let duration = get_u32(&a, 36);
    out.truncate(size_out.min(4096));
    Ok(TestRun {
        retval,
        ns_per_run: f64::from(duration),
        wall_ns: wall.as_nanos() as f64,
        out,
    })
}

/// `return XDP_TX` and nothing else: the cost of the test-run loop itself.
pub fn prog_return_tx() -> Vec<Insn> {
    vec![movi(0, XDP_TX), exit()]
}

/// The floor: swap Ethernet addresses, IPv4 or IPv6 addresses and UDP ports, return XDP_TX
/// (anything that isn't IPv4/IPv6 with room for the headers passes). It answers nothing; it is
/// the least a program that sends a reply back out of the same interface has to do.
pub fn prog_floor() -> Vec<Insn> {
    // Jumps are emitted with offset 0 and patched once the labels are known.
    fn patch(p: &mut [Insn], at: usize, target: usize) {
        let off = (target as i64 - at as i64 - 1) as u16 as u64;
        p[at].0 = (p[at].0 & !(0xffff << 16)) | (off << 16);
    }
    let mut to_pass: Vec<usize> = Vec::new();
    // r2 = data, r3 = data_end; Ethernet + IPv4 + UDP is 42 bytes, else pass.
    let mut p = vec![
        ldx(Size::W, 2, 1, 0),
        ldx(Size::W, 3, 1, 4),
        mov(4, 2),
        addi(4, 42),
    ];
    to_pass.push(p.len());
    p.push(jgt(4, 3, 0));
    // `*(size *)(r2 + a)` and `*(size *)(r2 + b)` swapped, through r5 and r6.
    let swap = |size: Size, a: i16, b: i16| {
        [
            ldx(size, 5, 2, a),
            ldx(size, 6, 2, b),
            stx(size, 2, 6, a),
            stx(size, 2, 5, b),
        ]
    };
    // MACs: 4 + 2 bytes each.
    p.extend(swap(Size::W, 0, 6));
    p.extend(swap(Size::H, 4, 10));
    p.push(ldx(Size::H, 5, 2, 12));
    // 0x0800 in network order read as a little-endian u16 is 0x0008; 0x86dd is 0xdd86.
    let to_v4 = p.len();
    p.push(jeqi(5, 0x0008, 0));
    to_pass.push(p.len());
    // if r5 != 0x86dd goto pass
    p.push(insn(0x55, 5, 0, 0, 0xdd86));
    // IPv6: 14 + 40 + 8 = 62 bytes.
    p.push(mov(4, 2));
    p.push(addi(4, 62));
    to_pass.push(p.len());
    p.push(jgt(4, 3, 0));
    for w in 0..4i16 {
        p.extend(swap(Size::W, 22 + 4 * w, 38 + 4 * w));
    }
    p.extend(swap(Size::H, 54, 56));
    p.extend([movi(0, XDP_TX), exit()]);
    let v4 = p.len();
    patch(&mut p, to_v4, v4);
    p.extend(swap(Size::W, 26, 30));
    p.extend(swap(Size::H, 34, 36));
    p.extend([movi(0, XDP_TX), exit()]);
    let pass = p.len();
    p.extend([movi(0, XDP_PASS), exit()]);
    for at in to_pass {
        patch(&mut p, at, pass);
    }
    p
}

/// A wrapper that puts `frame` back as it was (length and bytes) and tail-calls slot 0 of
/// `prog_array`: with it, every one of `repeat` test runs sees the original query instead of the
/// answer the previous run left in the buffer. Its own cost is measured with [`prog_return_tx`]
/// as the target and subtracted.
pub fn prog_restore_and_call(frame: &[u8], prog_array: i32) -> Vec<Insn> {
    let len = frame.len() as i32;
    let mut p = vec![
        mov(6, 1),
        ldx(Size::W, 2, 6, 0),
        ldx(Size::W, 3, 6, 4),
        sub(3, 2),
        movi(2, len),
        sub(2, 3),
        // Always called (offset 0 on the first run) so that the wrapper costs the same each time.
        mov(1, 6),
        call(FN_XDP_ADJUST_TAIL),
        ldx(Size::W, 2, 6, 0),
        ldx(Size::W, 3, 6, 4),
        mov(4, 2),
        addi(4, len),
    ];
    let check = p.len();
    p.push(jgt(4, 3, 0)); // -> abort
    let mut off = 0usize;
    while off < frame.len() {
        let rest = frame.len() - off;
        let (size, n) = if rest >= 4 {
            (Size::W, 4)
        } else if rest >= 2 {
            (Size::H, 2)
        } else {
            (Size::B, 1)
        };
        let mut b = [0u8; 4];
        b[..n].copy_from_slice(&frame[off..off + n]);
        p.push(st(size, 2, off as i16, i32::from_le_bytes(b)));
        off += n;
    }
    p.push(mov(1, 6));
    p.extend(ld_map_fd(2, prog_array));
    p.push(movi(3, 0));
    p.push(call(FN_TAIL_CALL));
    let abort = p.len();
    p.extend([movi(0, XDP_ABORTED), exit()]);
    p[check] = jgt(4, 3, (abort - check - 1) as i16);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_like_the_kernel() {
        // r0 = 3 ; exit
        assert_eq!(movi(0, 3).0, 0x0000_0003_0000_00b7);
        assert_eq!(exit().0, 0x95);
        // r2 = *(u32 *)(r1 + 4)
        assert_eq!(ldx(Size::W, 2, 1, 4).0, 0x0000_0000_0004_1261);
        // *(u16 *)(r2 + 10) = r6
        assert_eq!(stx(Size::H, 2, 6, 10).0, 0x0000_0000_000a_626b);
    }

    #[test]
    fn floor_jumps_stay_inside() {
        let p = prog_floor();
        for (i, ins) in p.iter().enumerate() {
            let code = (ins.0 & 0xff) as u8;
            if code & 0x07 == 0x05 && code != 0x85 && code != 0x95 {
                let off = ((ins.0 >> 16) & 0xffff) as u16 as i16;
                let t = i as i64 + 1 + off as i64;
                assert!(
                    t > i as i64 && (t as usize) < p.len(),
                    "insn {i} jumps to {t}"
                );
            }
        }
    }
}
