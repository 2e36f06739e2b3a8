//! Ethernet/IPv4/TCP/UDP header offsets and the parsed view of one packet.
//!
//! Headers are read with direct packet access: [`linear`] first makes sure the bytes are in the
//! skb's linear area (pulling them in with `bpf_skb_pull_data` when a non-linear skb keeps them in
//! its fragments), so non-linear skbs work too, and no helper is called per field. The TCP flags
//! are read along, so that no hook reads them again. Addresses and ports stay in network byte
//! order.
use aya_ebpf::programs::TcContext;
use switchyard_abi::proto;

/// Ethernet header length.
pub const ETH_HLEN: usize = 14;
/// Offset of the EtherType.
pub const ETH_PROTO_OFF: usize = 12;
/// EtherType of IPv4, as read from the wire into a native `u16`.
pub const ETH_P_IP_BE: u16 = 0x0800u16.to_be();
/// Offset of the IPv4 header.
pub const IP_OFF: usize = ETH_HLEN;
/// Offset of the IPv4 protocol.
pub const IP_PROTO_OFF: usize = IP_OFF + 9;
/// Offset of the IPv4 header checksum.
pub const IP_CSUM_OFF: usize = IP_OFF + 10;
/// Offset of the IPv4 source address.
pub const IP_SADDR_OFF: usize = IP_OFF + 12;
/// Offset of the IPv4 destination address.
pub const IP_DADDR_OFF: usize = IP_OFF + 16;
/// Minimal IPv4 header length.
pub const IP_HLEN: usize = 20;
/// TCP flag FIN.
pub const TCP_FIN: u8 = 0x01;
/// TCP flag SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP flag RST.
pub const TCP_RST: u8 = 0x04;
/// TCP flag ACK.
pub const TCP_ACK: u8 = 0x10;

/// The parts of an IPv4 TCP/UDP packet the datapath decides on.
#[derive(Clone, Copy)]
pub struct Flow {
    /// IP protocol.
    pub proto: u8,
    /// Source address (network order).
    pub saddr: u32,
    /// Destination address (network order).
    pub daddr: u32,
    /// Source port (network order).
    pub sport: u16,
    /// Destination port (network order).
    pub dport: u16,
    /// Offset of the L4 header.
    pub l4_off: usize,
    /// IPv4 header length in bytes.
    pub ihl_len: usize,
    /// IPv4 identification (network order): names the datagram its fragments belong to.
    pub id: u16,
    /// IPv4 flags and fragment offset (host order).
    pub frag: u16,
    /// TCP flags (0 for UDP).
    pub tcp: u8,
}

/// `Flow::frag`/`Ip::frag`: more fragments follow.
pub const IP_MF: u16 = 0x2000;
/// `Flow::frag`/`Ip::frag`: the fragment offset.
pub const IP_OFFSET: u16 = 0x1fff;

impl Flow {
    /// Whether this is the first fragment of a fragmented datagram (its later fragments, which
    /// carry no ports, must be translated the same way).
    #[inline(always)]
    pub fn first_fragment(&self) -> bool {
        self.frag & IP_MF != 0 && self.frag & IP_OFFSET == 0
    }

    /// Offset of the L4 checksum.
    #[inline(always)]
    pub fn l4_csum_off(&self) -> usize {
        if self.proto == proto::TCP {
            self.l4_off + 16
        } else {
            self.l4_off + 6
        }
    }

    /// Offset of the source port.
    #[inline(always)]
    pub fn sport_off(&self) -> usize {
        self.l4_off
    }

    /// The TCP flags byte (0 for UDP), read by [`parse`].
    #[inline(always)]
    pub fn tcp_flags(&self) -> u8 {
        self.tcp
    }

    /// The closing flags (`CT_FLAG_*`, equal to `NAT_FLAG_*`) TCP flags `tcp` carry.
    #[inline(always)]
    pub fn closing(tcp: u8) -> u8 {
        let mut f = 0;
        if tcp & TCP_FIN != 0 {
            f |= switchyard_abi::CT_FLAG_FIN;
        }
        if tcp & TCP_RST != 0 {
            f |= switchyard_abi::CT_FLAG_RST;
        }
        f
    }

    /// Whether this is a TCP SYN without ACK (the first packet of a connection).
    #[inline(always)]
    pub fn is_tcp_syn(&self) -> bool {
        self.proto == proto::TCP && self.tcp & (TCP_SYN | TCP_ACK) == TCP_SYN
    }

    /// Offset of the destination port.
    #[inline(always)]
    pub fn dport_off(&self) -> usize {
        self.l4_off + 2
    }
}

/// An IPv4 packet without ports: not TCP/UDP, or a non-first fragment.
#[derive(Clone, Copy)]
pub struct Ip {
    /// Source address (network order).
    pub saddr: u32,
    /// Destination address (network order).
    pub daddr: u32,
    /// IP protocol.
    pub proto: u8,
    /// IPv4 header length in bytes.
    pub ihl_len: usize,
    /// IPv4 identification (network order).
    pub id: u16,
    /// IPv4 flags and fragment offset (host order).
    pub frag: u16,
}

impl Ip {
    /// Whether this is a non-first fragment.
    #[inline(always)]
    pub fn later_fragment(&self) -> bool {
        self.frag & IP_OFFSET != 0
    }
}

/// What [`parse`] found.
pub enum Parsed {
    /// An IPv4 TCP or UDP packet (first fragment or unfragmented).
    L4(Flow),
    /// IPv4 but not TCP/UDP, or a non-first fragment: only address-based forwarding applies.
    L3(Ip),
    /// Not IPv4.
    Other,
}

/// The start of the linear data of `ctx` if it holds the first `len` bytes of the packet, pulling
/// them into the linear area first when they are not (a non-linear skb). `None`: the packet is
/// shorter than `len`, or the pull failed.
#[inline(always)]
pub fn linear(ctx: &TcContext, len: usize) -> Option<usize> {
    if ctx.data() + len <= ctx.data_end() {
        return Some(ctx.data());
    }
    if (ctx.len() as usize) < len {
        return None;
    }
    ctx.pull_data(len as u32).ok()?;
    (ctx.data() + len <= ctx.data_end()).then(|| ctx.data())
}

/// Reads a `T` at address `at` of the packet. The caller has checked that the bytes are within
/// the linear data (`data_end`), in the verifier's view too.
#[inline(always)]
unsafe fn read<T: Copy>(at: usize) -> T {
    core::ptr::read_unaligned(at as *const T)
}

/// Parses the packet headers. `Err` means the packet is shorter than its headers claim (for
/// TCP and UDP: than the whole L4 header).
#[inline(always)]
pub fn parse(ctx: &TcContext) -> Result<Parsed, ()> {
    let data = linear(ctx, ETH_HLEN).ok_or(())?;
    // SAFETY: within the ETH_HLEN bytes `linear` checked.
    let eth_proto: u16 = unsafe { read(data + ETH_PROTO_OFF) };
    if eth_proto != ETH_P_IP_BE {
        return Ok(Parsed::Other);
    }
    let data = linear(ctx, IP_OFF + IP_HLEN).ok_or(())?;
    let ip = data + IP_OFF;
    if ip + IP_HLEN > ctx.data_end() {
        return Err(());
    }
    // SAFETY: within the IPv4 header checked just above.
    let (ver_ihl, id, frag, ip_proto, saddr, daddr) = unsafe {
        (
            read::<u8>(ip),
            read::<u16>(ip + 4),
            u16::from_be(read::<u16>(ip + 6)),
            read::<u8>(ip + 9),
            read::<u32>(ip + 12),
            read::<u32>(ip + 16),
        )
    };
    if ver_ihl >> 4 != 4 {
        return Err(());
    }
    let ihl_len = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl_len < IP_HLEN {
        return Err(());
    }
    if frag & IP_OFFSET != 0 || (ip_proto != proto::TCP && ip_proto != proto::UDP) {
        return Ok(Parsed::L3(Ip {
            saddr,
            daddr,
            proto: ip_proto,
            ihl_len,
            id,
            frag,
        }));
    }
    let l4_off = IP_OFF + ihl_len;
    // The whole TCP/UDP header, checksum included, or the packet is malformed: a translation
    // that cannot update the checksum must not be decided (and tracked) in the first place.
    let l4_hlen = if ip_proto == proto::TCP { 20 } else { 8 };
    let data = linear(ctx, l4_off + l4_hlen).ok_or(())?;
    let l4 = data + l4_off;
    if l4 + 8 > ctx.data_end() {
        return Err(());
    }
    // SAFETY: within the 8 bytes checked just above.
    let (sport, dport) = unsafe { (read::<u16>(l4), read::<u16>(l4 + 2)) };
    let tcp = if ip_proto == proto::TCP {
        if l4 + 20 > ctx.data_end() {
            return Err(());
        }
        // SAFETY: within the 20 bytes checked just above.
        unsafe { read::<u8>(l4 + 13) }
    } else {
        0
    };
    Ok(Parsed::L4(Flow {
        proto: ip_proto,
        saddr,
        daddr,
        sport,
        dport,
        l4_off,
        ihl_len,
        id,
        frag,
        tcp,
    }))
}
