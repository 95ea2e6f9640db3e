package vm

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// probeMarker is what the probe guest's boot sector writes to COM1.
const probeMarker = "RWKVM"

// probeSector is a boot sector that writes probeMarker to the first
// serial port (I/O port 0x3f8) and halts: the smallest guest that shows
// the accelerator runs code.
func probeSector() []byte {
	code := []byte{0xBA, 0xF8, 0x03} // mov dx, 0x3f8
	for _, c := range []byte(probeMarker) {
		code = append(code, 0xB0, c, 0xEE) // mov al, c; out dx, al
	}
	code = append(code, 0xFA, 0xF4, 0xEB, 0xFD) // cli; hlt; jmp back to hlt
	b := make([]byte, 512)
	copy(b, code)
	b[510], b[511] = 0x55, 0xAA
	return b
}

// ProbeKVM boots a one-sector guest under KVM (SeaBIOS, the probe disk
// on virtio) and waits at most timeout for it to print on its serial
// console; QEMU is killed either way. A nil error means KVM ran the guest;
// otherwise the error says why not (no /dev/kvm, QEMU refused, or the
// guest printed nothing: KVM hangs on this host, as under some nested
// virtualisation).
func ProbeKVM(ctx context.Context, dir string, timeout time.Duration) error {
	if _, err := os.Stat("/dev/kvm"); err != nil {
		return fmt.Errorf("no /dev/kvm (%v)", err)
	}
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("/dev/kvm cannot be opened: %v", err)
	}
	f.Close()
	disk := filepath.Join(dir, "kvm-probe.img")
	if err := BlankDisk(disk, 1<<20); err != nil {
		return err
	}
	defer os.Remove(disk)
	w, err := os.OpenFile(disk, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = w.WriteAt(probeSector(), 0)
	w.Close()
	if err != nil {
		return err
	}
	v := &VM{Accel: "kvm", MemoryMB: 64, Drives: []Drive{{Path: disk, Boot: true}}, StopWhen: probeMarker, Timeout: timeout}
	out, err := v.Run(ctx)
	if err == nil && strings.Contains(out, probeMarker) {
		return nil
	}
	var te *TimeoutError
	if err != nil && !errors.As(err, &te) {
		return fmt.Errorf("QEMU with -accel kvm: %v: %s", err, LastLines(out, 3))
	}
	return fmt.Errorf("a one-sector guest under KVM printed nothing on its serial console within %s (KVM hangs on this host)", timeout)
}
