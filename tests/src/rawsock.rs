//! A raw `AF_PACKET` socket on one interface: sends hand-built Ethernet frames (802.1Q tags
//! included, no VLAN device needed) and receives frames with their VLAN tag put back in place
//! (the stack moves a received tag into metadata, reported in `PACKET_AUXDATA`).
//!
//! Open it on a thread that has entered the namespace ([`crate::enter_netns`]).

use std::{
    ffi::CString,
    io,
    mem::{size_of, zeroed},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    time::{Duration, Instant},
};

const ETH_P_ALL: u16 = 0x0003;

pub struct RawSock {
    fd: OwnedFd,
    ifindex: i32,
}

fn check(r: libc::c_int, what: &str) -> io::Result<libc::c_int> {
    if r < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{what}: {e}")));
    }
    Ok(r)
}

impl RawSock {
    pub fn open(ifname: &str) -> io::Result<Self> {
        let name = CString::new(ifname).expect("interface name");
        // SAFETY: plain libc calls with valid arguments; the fd is owned right away.
        unsafe {
            let ifindex = libc::if_nametoindex(name.as_ptr()) as i32;
            if ifindex == 0 {
                return Err(io::Error::last_os_error());
            }
            let fd = check(
                libc::socket(
                    libc::AF_PACKET,
                    libc::SOCK_RAW,
                    i32::from(ETH_P_ALL.to_be()),
                ),
                "socket(AF_PACKET)",
            )?;
            let fd = OwnedFd::from_raw_fd(fd);
            let mut sll: libc::sockaddr_ll = zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex;
            check(
                libc::bind(
                    fd.as_raw_fd(),
                    (&sll as *const libc::sockaddr_ll).cast(),
                    size_of::<libc::sockaddr_ll>() as u32,
                ),
                "bind(AF_PACKET)",
            )?;
            let one: libc::c_int = 1;
            check(
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_AUXDATA,
                    (&one as *const libc::c_int).cast(),
                    size_of::<libc::c_int>() as u32,
                ),
                "PACKET_AUXDATA",
            )?;
            Ok(Self { fd, ifindex })
        }
    }

    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        // SAFETY: sockaddr_ll zeroed then filled; the buffer outlives the call.
        unsafe {
            let mut sll: libc::sockaddr_ll = zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_ifindex = self.ifindex;
            sll.sll_halen = 6;
            sll.sll_addr[..6].copy_from_slice(&frame[..6]);
            let n = libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&sll as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as u32,
            );
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    /// The next incoming (not outgoing) frame that `want` accepts, within `timeout`; the VLAN
    /// tag, if the stack took it out, is put back after the MAC addresses.
    pub fn recv(&self, timeout: Duration, want: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let tv = libc::timeval {
                tv_sec: left.as_secs() as libc::time_t,
                tv_usec: libc::suseconds_t::from(left.subsec_micros().max(1)),
            };
            let mut buf = vec![0u8; 4096];
            let mut ctrl = [0u64; 16];
            // SAFETY: every pointer in the msghdr points at a live local buffer of the size given.
            let (n, sll, aux) = unsafe {
                libc::setsockopt(
                    self.fd.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_RCVTIMEO,
                    (&tv as *const libc::timeval).cast(),
                    size_of::<libc::timeval>() as u32,
                );
                let mut sll: libc::sockaddr_ll = zeroed();
                let mut iov = libc::iovec {
                    iov_base: buf.as_mut_ptr().cast(),
                    iov_len: buf.len(),
                };
                let mut msg: libc::msghdr = zeroed();
                msg.msg_name = (&mut sll as *mut libc::sockaddr_ll).cast();
                msg.msg_namelen = size_of::<libc::sockaddr_ll>() as u32;
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = ctrl.as_mut_ptr().cast();
                msg.msg_controllen = size_of::<[u64; 16]>();
                let n = libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0);
                if n < 0 {
                    return None;
                }
                let mut aux: Option<libc::tpacket_auxdata> = None;
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA
                    {
                        aux = Some(std::ptr::read_unaligned(
                            libc::CMSG_DATA(c).cast::<libc::tpacket_auxdata>(),
                        ));
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
                (n as usize, sll, aux)
            };
            if sll.sll_pkttype == libc::PACKET_OUTGOING {
                continue;
            }
            buf.truncate(n);
            if let Some(a) = aux {
                if a.tp_status & libc::TP_STATUS_VLAN_VALID != 0 && buf.len() >= 12 {
                    let tpid = if a.tp_status & libc::TP_STATUS_VLAN_TPID_VALID != 0 {
                        a.tp_vlan_tpid
                    } else {
                        0x8100
                    };
                    let mut tag = tpid.to_be_bytes().to_vec();
                    tag.extend_from_slice(&a.tp_vlan_tci.to_be_bytes());
                    buf.splice(12..12, tag);
                }
            }
            if want(&buf) {
                return Some(buf);
            }
        }
    }
}

/// The MAC address of `ifname` in namespace `ns`.
pub fn mac_of(ns: &crate::NetNs, ifname: &str) -> [u8; 6] {
    let out = ns.ip(&["-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j link show");
    let s = v[0]["address"].as_str().expect("address");
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(s.split(':')) {
        *m = u8::from_str_radix(p, 16).expect("hex MAC");
    }
    mac
}
