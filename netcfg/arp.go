package netcfg

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

const ethPARP = 0x0806

// arpProbe sends RFC 5227 ARP probes for ip on l and returns the hardware
// address of a host that answers for it, or nil when nobody does within
// about a second.
func arpProbe(ctx context.Context, l netlink.Link, ip netip.Addr) (net.HardwareAddr, error) {
	fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, int(htons(ethPARP)))
	if err != nil {
		return nil, err
	}
	defer unix.Close(fd)
	ifindex := l.Attrs().Index
	if err := unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: ifindex}); err != nil {
		return nil, err
	}
	mac := l.Attrs().HardwareAddr
	target := ip.As4()
	probe := make([]byte, 28)
	binary.BigEndian.PutUint16(probe[0:], 1)      // Ethernet
	binary.BigEndian.PutUint16(probe[2:], 0x0800) // IPv4
	probe[4], probe[5] = 6, 4
	binary.BigEndian.PutUint16(probe[6:], 1) // request
	copy(probe[8:14], mac)                   // sender MAC; sender IP stays 0.0.0.0
	copy(probe[24:28], target[:])
	dst := &unix.SockaddrLinklayer{Protocol: htons(ethPARP), Ifindex: ifindex, Halen: 6}
	copy(dst.Addr[:], []byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff})

	tv := unix.NsecToTimeval((100 * time.Millisecond).Nanoseconds())
	if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
		return nil, err
	}
	buf := make([]byte, 128)
	deadline := time.Now().Add(time.Second)
	next := time.Now()
	for sent := 0; time.Now().Before(deadline); {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if sent < 3 && !time.Now().Before(next) {
			if err := unix.Sendto(fd, probe, 0, dst); err != nil {
				return nil, err
			}
			sent++
			next = time.Now().Add(250 * time.Millisecond)
		}
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil || n < 28 {
			continue
		}
		p := buf[:n]
		if binary.BigEndian.Uint16(p[2:]) != 0x0800 || p[4] != 6 || p[5] != 4 {
			continue
		}
		sender := net.HardwareAddr(append([]byte(nil), p[8:14]...))
		if [4]byte(p[14:18]) == target && sender.String() != mac.String() {
			return sender, nil // someone announces or answers for ip
		}
	}
	return nil, nil
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
