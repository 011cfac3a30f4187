//! Wire constants both sides need: the XDP program parses and writes these headers, the daemon
//! lays out answers that point into the message and answers what the program passes up.

/// EtherType of IPv4, IPv6 and an 802.1Q tag.
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_8021Q: u16 = 0x8100;
/// Ethernet header (two MAC addresses and the EtherType), and what an 802.1Q tag adds.
pub const ETH_HLEN: usize = 14;
pub const VLAN_HLEN: usize = 4;
/// IPv4 header without options, IPv6 header without extension headers, UDP header.
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
pub const IPPROTO_UDP: u8 = 17;

/// The DNS message header (RFC 1035 4.1.1). The question name starts right after it, so this is
/// also the offset that compression pointers to the query name carry.
pub const DNS_HEADER_LEN: usize = 12;
/// An OPT record without options (RFC 6891 6.1.2): root name (1), TYPE (2), CLASS (2), TTL (4),
/// RDLENGTH (2).
pub const OPT_RR_LEN: usize = 11;
/// EDNS option code of NSID (RFC 5001 §2.3).
pub const OPTION_NSID: u16 = 3;

pub const TYPE_A: u16 = 1;
pub const TYPE_CNAME: u16 = 5;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_OPT: u16 = 41;
pub const CLASS_IN: u16 = 1;
