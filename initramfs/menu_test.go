package initramfs

import (
	"strings"
	"testing"

	"github.com/rewind-bmr/rewind/rescue"
)

// The boot menus carry a third entry, "Capture this machine", whose
// command line sets rewind.action=capture exactly once, whatever media
// build --cmdline says; the other entries do not capture.
func TestMenuCaptureEntry(t *testing.T) {
	for _, extra := range []string{
		"",
		"rewind.auto",
		`rewind.action=restore rewind.countdown=30 rewind.target="serial=WD 1"`,
		"rewind.action=capture quiet",
	} {
		t.Run(extra, func(t *testing.T) {
			menu := Menu(extra)
			var ids []string
			for _, e := range menu {
				ids = append(ids, e.ID)
			}
			if got, want := strings.Join(ids, ","), "restore,shell,capture"; got != want {
				t.Fatalf("menu entries: got %s, want %s", got, want)
			}
			capture := menu[2]
			if capture.Title != "Rewind: Capture this machine" {
				t.Errorf("capture entry title: got %q, want %q", capture.Title, "Rewind: Capture this machine")
			}
			for _, e := range menu {
				fields := cmdlineFields(e.Cmdline)
				n, action := 0, 0
				for _, f := range fields {
					if f == CaptureCmdline {
						n++
					}
					if strings.HasPrefix(f, "rewind.action=") {
						action++
					}
				}
				// The restore and shell entries capture only when
				// --cmdline asks it.
				want := strings.Count(extra, CaptureCmdline)
				if e.ID == "capture" {
					want = 1
					if action != 1 {
						t.Errorf("capture entry %q: got %d rewind.action= keys, want exactly 1", e.Cmdline, action)
					}
				}
				if n != want {
					t.Errorf("%s entry %q: got rewind.action=capture %d times, want %d", e.ID, e.Cmdline, n, want)
				}
				if !strings.HasPrefix(e.Cmdline, BaseCmdline) {
					t.Errorf("%s entry %q: does not start with %q", e.ID, e.Cmdline, BaseCmdline)
				}
				if strings.Contains(extra, "serial=WD 1") && !strings.Contains(e.Cmdline, `rewind.target="serial=WD 1"`) {
					t.Errorf("%s entry %q: lost --cmdline's rewind.target", e.ID, e.Cmdline)
				}
			}

			// The rescue flow reads each entry's command line as it boots.
			for _, e := range menu {
				o, err := rescue.ParseCmdline(e.Cmdline)
				if err != nil {
					t.Errorf("%s entry %q: the rescue flow refuses it: %v", e.ID, e.Cmdline, err)
					continue
				}
				if e.ID == "capture" && o.Action != rescue.ActionCapture {
					t.Errorf("capture entry %q: got action %q, want %q", e.Cmdline, o.Action, rescue.ActionCapture)
				}
			}

			cfg := grubConfig(menu, 5, "/boot/vmlinuz", "/boot/initramfs.cpio.gz")
			want := "menuentry 'Rewind: Capture this machine' --id capture {\n\techo 'Loading the Rewind rescue environment...'\n\tlinux /boot/vmlinuz " + capture.Cmdline + "\n\tinitrd /boot/initramfs.cpio.gz\n}\n"
			if !strings.Contains(cfg, want) {
				t.Errorf("grub.cfg lacks %q:\n%s", want, cfg)
			}
			if got := strings.Count(cfg, "rewind.action=capture"); got != strings.Count(extra, "rewind.action=capture")*2+1 {
				t.Errorf("grub.cfg has rewind.action=capture %d times, want once for the capture entry (plus once per other entry given it by --cmdline):\n%s", got, cfg)
			}
			script := ipxeScript(menu, 3)
			for _, want := range []string{
				"item capture Rewind: Capture this machine\n",
				"choose --default restore --timeout 3000 entry",
				":capture\nkernel vmlinuz initrd=initramfs.cpio.gz " + capture.Cmdline + "\ninitrd initramfs.cpio.gz\nboot",
			} {
				if !strings.Contains(script, want) {
					t.Errorf("boot.ipxe lacks %q:\n%s", want, script)
				}
			}
		})
	}
}
