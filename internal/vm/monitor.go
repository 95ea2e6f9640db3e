package vm

import (
	"bufio"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// MonitorCommand runs one command on the human monitor at the Unix socket
// sock (VM.Monitor) and returns its output.
func MonitorCommand(sock, command string) (string, error) {
	c, err := net.DialTimeout("unix", sock, 2*time.Second)
	if err != nil {
		return "", fmt.Errorf("QEMU monitor %s: %w", sock, err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	r := bufio.NewReader(c)
	if _, err := readPrompt(r); err != nil {
		return "", fmt.Errorf("QEMU monitor %s: %w", sock, err)
	}
	if _, err := fmt.Fprintf(c, "%s\n", command); err != nil {
		return "", err
	}
	out, err := readPrompt(r)
	if err != nil {
		return "", fmt.Errorf("QEMU monitor %s: %s: %w", sock, command, err)
	}
	return out, nil
}

func readPrompt(r *bufio.Reader) (string, error) {
	var b strings.Builder
	for !strings.HasSuffix(b.String(), "(qemu) ") {
		c, err := r.ReadByte()
		if err != nil {
			return b.String(), err
		}
		b.WriteByte(c)
	}
	return strings.TrimSuffix(b.String(), "(qemu) "), nil
}

// GuestAccepted reports whether QEMU's user network (its monitor's "info
// usernet") holds a TCP connection to the guest's port that got past the
// handshake. A hostfwd connection is accepted on the host at once, before
// the guest answers; only the guest's SYN-ACK moves it on from SYN_SENT
// (a refused one is closed, a guest without an address never answers).
func GuestAccepted(usernet string, guestPort int) bool {
	for _, line := range strings.Split(usernet, "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || !strings.HasPrefix(f[0], "TCP[") || f[5] != strconv.Itoa(guestPort) {
			continue
		}
		switch strings.TrimSuffix(strings.TrimPrefix(f[0], "TCP["), "]") {
		case "ESTABLISHED", "CLOSE_WAIT", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSING", "LAST_ACK", "TIME_WAIT":
			return true
		}
	}
	return false
}
