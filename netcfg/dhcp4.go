package netcfg

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sync"
	"time"

	"github.com/insomniacslk/dhcp/dhcpv4"
	"github.com/insomniacslk/dhcp/dhcpv4/nclient4"
	"github.com/insomniacslk/dhcp/iana"
	"github.com/u-root/u-root/pkg/dhclient"
	"github.com/vishvananda/netlink"
)

// xidSource hands out DHCP transaction IDs. RFC 2131 asks only that they
// differ between clients and exchanges, not that they be secret, so they
// come from math/rand/v2 seeded from the clock and the NIC's MAC: a DHCP
// exchange never waits for the kernel's random pool. (dhcpv4.New reads
// crypto-grade randomness with getrandom(GRND_NONBLOCK) and spins until the
// pool is ready: on a VM without an RNG device it gave up after the DHCP
// timeout with "could not get random number".)
type xidSource struct {
	mu sync.Mutex
	r  *rand.Rand
}

func newXIDSource(mac net.HardwareAddr) *xidSource {
	var m [8]byte
	copy(m[:], mac)
	return &xidSource{r: rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), binary.BigEndian.Uint64(m[:])))}
}

func (x *xidSource) next() dhcpv4.TransactionID {
	x.mu.Lock()
	defer x.mu.Unlock()
	var id dhcpv4.TransactionID
	binary.BigEndian.PutUint32(id[:], x.r.Uint32())
	return id
}

// requested asks a DHCP server for the options Rewind uses.
func requested() dhcpv4.Modifier {
	return dhcpv4.WithRequestedOptions(
		dhcpv4.OptionSubnetMask, dhcpv4.OptionRouter, dhcpv4.OptionDomainName,
		dhcpv4.OptionDomainNameServer, dhcpv4.OptionClasslessStaticRoute, dhcpv4.OptionDNSDomainSearchList,
	)
}

// message builds a DHCP request from mac without dhcpv4.New (which asks
// the kernel's random pool for its transaction ID).
func message(mac net.HardwareAddr, xid dhcpv4.TransactionID, mods ...dhcpv4.Modifier) *dhcpv4.DHCPv4 {
	m := &dhcpv4.DHCPv4{
		OpCode:        dhcpv4.OpcodeBootRequest,
		HWType:        iana.HWTypeEthernet,
		ClientHWAddr:  mac,
		TransactionID: xid,
		ClientIPAddr:  net.IPv4zero,
		YourIPAddr:    net.IPv4zero,
		ServerIPAddr:  net.IPv4zero,
		GatewayIPAddr: net.IPv4zero,
		Options:       make(dhcpv4.Options),
	}
	for _, mod := range mods {
		mod(m)
	}
	return m
}

// exchange runs one DHCPv4 DISCOVER, OFFER, REQUEST, ACK exchange on dev,
// asking for want when it is set. Each message is sent up to three times,
// waiting 1 s, then 2 s, then 4 s for the answer.
func exchange(ctx context.Context, dev netlink.Link, xids *xidSource, want net.IP) (*dhclient.Packet4, error) {
	mac := dev.Attrs().HardwareAddr
	c, err := nclient4.New(dev.Attrs().Name, nclient4.WithHWAddr(mac), nclient4.WithTimeout(time.Second), nclient4.WithRetry(3))
	if err != nil {
		return nil, fmt.Errorf("open a DHCP socket on %s: %w", dev.Attrs().Name, err)
	}
	defer c.Close()
	mods := []dhcpv4.Modifier{dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)), requested()}
	if want != nil {
		mods = append(mods, dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(want)))
	}
	discover := message(mac, xids.next(), append(mods, dhcpv4.WithMessageType(dhcpv4.MessageTypeDiscover))...)
	offer, err := c.SendAndRead(ctx, nclient4.DefaultServers, discover, nclient4.IsMessageType(dhcpv4.MessageTypeOffer))
	if err != nil {
		return nil, fmt.Errorf("no offer: %w", err)
	}
	request := message(mac, offer.TransactionID,
		dhcpv4.WithReply(offer),
		dhcpv4.WithMessageType(dhcpv4.MessageTypeRequest),
		dhcpv4.WithClientIP(offer.ClientIPAddr),
		dhcpv4.WithOption(dhcpv4.OptRequestedIPAddress(offer.YourIPAddr)),
		dhcpv4.WithOptionCopied(offer, dhcpv4.OptionServerIdentifier),
		dhcpv4.WithOption(dhcpv4.OptMaxMessageSize(nclient4.MaxMessageSize)),
		requested(),
	)
	ack, err := c.SendAndRead(ctx, nclient4.DefaultServers, request, nclient4.IsAll(
		nclient4.IsCorrectServer(offer.ServerIdentifier()),
		nclient4.IsMessageType(dhcpv4.MessageTypeAck, dhcpv4.MessageTypeNak)))
	if err != nil {
		return nil, fmt.Errorf("no answer to the request for %s: %w", offer.YourIPAddr, err)
	}
	if ack.MessageType() == dhcpv4.MessageTypeNak {
		return nil, fmt.Errorf("server %s refused %s (DHCPNAK: %s)", offer.ServerIdentifier(), offer.YourIPAddr, ack.Message())
	}
	p := dhclient.NewPacket4(dev, ack)
	if p.Lease() == nil {
		return nil, errors.New("the DHCP answer holds no IPv4 address")
	}
	return p, nil
}

// Backoff of a NIC that has no lease: it asks again after 1 s, then 2 s,
// 4 s, ... up to 30 s between attempts, for as long as its context lasts.
const (
	firstRetry = time.Second
	maxRetry   = 30 * time.Second
)

// acquire asks for a lease on dev until one is granted or ctx ends,
// waiting first, then twice as long, up to maxRetry, between exchanges.
// It returns the last exchange's error when ctx ends.
func acquire(ctx context.Context, dev netlink.Link, xids *xidSource, first time.Duration, logf func(string, ...any)) (*dhclient.Packet4, error) {
	wait := first
	for {
		p, err := exchange(ctx, dev, xids, nil)
		if err == nil {
			return p, nil
		}
		if ctx.Err() != nil {
			return nil, err
		}
		logf("network: %s (%s): no DHCP lease yet (%v); asking again in %s", dev.Attrs().Name, dev.Attrs().HardwareAddr, err, wait)
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(wait):
		}
		wait = min(2*wait, maxRetry)
	}
}
