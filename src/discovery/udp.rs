//! The discovery sockets (IPv4): the listener on the target's port, joined to the multicast
//! group, and the sender on an ephemeral port that announces (leader) or answers (node).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

use super::{DiscoveryConfig, DiscoveryError};

fn target_v4(cfg: &DiscoveryConfig) -> Result<SocketAddrV4, DiscoveryError> {
    match cfg.target {
        SocketAddr::V4(v4) => Ok(v4),
        SocketAddr::V6(_) => Err(DiscoveryError::Socket {
            target: cfg.target,
            source: io::Error::new(io::ErrorKind::Unsupported, "discovery is IPv4 only"),
        }),
    }
}

fn udp() -> io::Result<Socket> {
    let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    socket.set_nonblocking(true)?;
    Ok(socket)
}

fn into_tokio(socket: Socket) -> io::Result<UdpSocket> {
    UdpSocket::from_std(socket.into())
}

/// Hears what is sent to the target. `SO_REUSEADDR` lets every node of a host (a worker and
/// an agent, or a leader checking for another) bind the same port, each receiving its own
/// copy of a multicast or broadcast datagram.
pub(crate) fn listener(cfg: &DiscoveryConfig) -> Result<UdpSocket, DiscoveryError> {
    let target = target_v4(cfg)?;
    let open = || -> io::Result<UdpSocket> {
        let socket = udp()?;
        socket.set_reuse_address(true)?;
        let group = *target.ip();
        // Bound to the group itself, the socket gets only that group's datagrams.
        let bind_ip = if group.is_multicast() {
            group
        } else {
            Ipv4Addr::UNSPECIFIED
        };
        socket.bind(&SocketAddrV4::new(bind_ip, target.port()).into())?;
        if group.is_multicast() {
            let iface = cfg.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
            socket.join_multicast_v4(&group, &iface)?;
        }
        into_tokio(socket)
    };
    open().map_err(|source| DiscoveryError::Socket {
        target: cfg.target,
        source,
    })
}

/// Sends to the target (and hears unicast answers): multicast limited to the local segment
/// (TTL 1), out of the configured interface, broadcast allowed.
pub(crate) fn sender(cfg: &DiscoveryConfig) -> Result<UdpSocket, DiscoveryError> {
    let target = target_v4(cfg)?;
    let open = || -> io::Result<UdpSocket> {
        let socket = udp()?;
        socket.set_broadcast(true)?;
        if target.ip().is_multicast() {
            socket.set_multicast_ttl_v4(1)?;
            socket.set_multicast_loop_v4(true)?;
            if let Some(iface) = cfg.interface {
                socket.set_multicast_if_v4(&iface)?;
            }
        }
        let bind_ip = cfg.interface.unwrap_or(Ipv4Addr::UNSPECIFIED);
        socket.bind(&SocketAddrV4::new(bind_ip, 0).into())?;
        into_tokio(socket)
    };
    open().map_err(|source| DiscoveryError::Socket {
        target: cfg.target,
        source,
    })
}

/// 16 random bytes: a message's nonce.
pub(crate) fn nonce() -> io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = vec![0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}
