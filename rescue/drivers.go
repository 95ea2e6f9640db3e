package rescue

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/u-root/u-root/pkg/kmodule"
	"golang.org/x/sys/unix"
)

// moduleParams are parameters Rewind always passes to some modules.
var moduleParams = map[string]string{
	// Don't wait a second before scanning each new USB stick.
	"usb_storage": "delay_use=0",
}

// Drivers loads kernel modules: by modalias for the devices present
// (coldplug), by name, and from drivers/ folders on rescue media.
type Drivers struct {
	dir      string // /lib/modules/RELEASE
	aliases  *AliasTable
	softdeps map[string][]string // module -> modules to load first
	prober   *kmodule.Prober
	log      func(format string, args ...any)

	// insmod loads a module file; a test swaps it for a fake.
	insmod func(path string) error
	// secureBoot explains refusals (ReadSecureBoot; set by the flow).
	secureBoot SecureBootState

	mu      sync.Mutex
	tried   map[string]bool // modules already attempted
	seen    map[string]bool // modaliases already handled
	loaded  []string
	refused []DriverRefusal
}

// NewDrivers reads modules.alias and modules.softdep of the running kernel.
// A kernel without modules (everything built in) gives a Drivers that
// loads nothing.
func NewDrivers(log func(string, ...any)) *Drivers {
	d := &Drivers{log: log, tried: map[string]bool{}, seen: map[string]bool{}, softdeps: map[string][]string{},
		insmod: insmod}
	var u unix.Utsname
	unix.Uname(&u)
	d.dir = filepath.Join("/lib/modules", unix.ByteSliceToString(u.Release[:]))
	f, err := os.Open(filepath.Join(d.dir, "modules.alias"))
	if err != nil {
		log("drivers: no modules for kernel %s (%v); relying on built-in drivers", filepath.Base(d.dir), err)
		return d
	}
	defer f.Close()
	if d.aliases, err = ParseAliases(f); err != nil {
		log("drivers: reading %s: %v", f.Name(), err)
	}
	if b, err := os.ReadFile(filepath.Join(d.dir, "modules.softdep")); err == nil {
		d.parseSoftdeps(string(b))
	}
	if d.prober, err = kmodule.NewProber(kmodule.ProbeOpts{}); err != nil {
		log("drivers: %v", err)
	}
	return d
}

func (d *Drivers) parseSoftdeps(s string) {
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[0] != "softdep" {
			continue
		}
		mod := moduleName(f[1])
		pre := true
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					d.softdeps[mod] = append(d.softdeps[mod], w)
				}
			}
		}
	}
}

// Load loads the named modules (and their dependencies); names that are
// aliases ("crypto-crc32c") are resolved through modules.alias.
func (d *Drivers) Load(names ...string) {
	for _, n := range names {
		d.load(moduleName(n), 0)
	}
}

func (d *Drivers) load(name string, depth int) bool {
	if d.prober == nil || depth > 4 {
		return false
	}
	d.mu.Lock()
	if d.tried[name] {
		d.mu.Unlock()
		return false
	}
	d.tried[name] = true
	d.mu.Unlock()
	for _, pre := range d.softdeps[name] {
		if d.aliases != nil {
			for _, m := range d.aliases.Match(pre) {
				d.load(m, depth+1)
			}
		}
		d.load(moduleName(pre), depth+1)
	}
	if err := d.prober.Probe(name, moduleParams[name]); err != nil {
		if d.aliases != nil && depth == 0 {
			if mods := d.aliases.Match(name); len(mods) > 0 {
				for _, m := range mods {
					d.load(m, depth+1)
				}
				return true
			}
		}
		if !strings.Contains(err.Error(), "could not find module path") {
			d.log("drivers: loading %s: %v", name, err)
		}
		return false
	}
	d.mu.Lock()
	d.loaded = append(d.loaded, name)
	d.mu.Unlock()
	return true
}

// Coldplug matches the modalias of every device in sysfs against
// modules.alias and loads what matches, repeating while loading drivers
// makes new devices appear (a PCI controller brings its USB or virtio
// devices). It returns the number of modules it loaded.
func (d *Drivers) Coldplug() int {
	if d.aliases == nil {
		return 0
	}
	total := 0
	for round := 0; round < 8; round++ {
		n := 0
		for _, alias := range readModaliases() {
			if d.seen[alias] {
				continue
			}
			d.seen[alias] = true
			var wg sync.WaitGroup
			for _, m := range d.aliases.Match(alias) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if d.load(m, 0) {
						d.mu.Lock()
						n++
						d.mu.Unlock()
					}
				}()
			}
			wg.Wait()
		}
		total += n
		if n == 0 {
			break
		}
	}
	return total
}

// Settle runs Coldplug until no new device has appeared for quiet, or
// until max has passed: USB devices enumerate after their host controller
// driver is loaded.
func (d *Drivers) Settle(quiet, max time.Duration) {
	deadline := time.Now().Add(max)
	lastNew := time.Now()
	for time.Now().Before(deadline) {
		before := len(d.seen)
		d.Coldplug()
		if len(d.seen) != before {
			lastNew = time.Now()
		} else if time.Since(lastNew) >= quiet {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Loaded lists the modules loaded so far.
func (d *Drivers) Loaded() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	out := append([]string(nil), d.loaded...)
	sort.Strings(out)
	return out
}

func readModaliases() []string {
	files, _ := filepath.Glob("/sys/bus/*/devices/*/modalias")
	var out []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if s := strings.TrimSpace(string(b)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// Refused lists the module files of drivers/ folders the kernel refused,
// with its errors.
func (d *Drivers) Refused() []DriverRefusal {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]DriverRefusal(nil), d.refused...)
}

// LoadDir loads every kernel module file in dir (drivers/ on the rescue
// media, /etc/rewind/drivers in the initramfs). Modules that depend on
// each other are retried until no more load; each one that still fails
// is logged with the kernel's error and kept for Refused.
func (d *Drivers) LoadDir(dir string) (int, error) {
	var files []string
	err := filepath.WalkDir(dir, func(p string, e os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.IsDir() && strings.Contains(e.Name(), ".ko") {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return 0, nil
		}
		return 0, err
	}
	loaded := 0
	var lastErr error
	errs := map[string]error{}
	for pass := 0; pass < 3 && len(files) > 0; pass++ {
		var again []string
		for _, p := range files {
			if err := d.insmod(p); err != nil {
				again = append(again, p)
				errs[p] = err
				lastErr = fmt.Errorf("%s: %w", p, err)
				continue
			}
			loaded++
			d.log("drivers: loaded %s", p)
		}
		if len(again) == len(files) {
			break
		}
		files = again
	}
	if len(files) > 0 && lastErr != nil {
		for _, p := range files {
			r := refusal(p, errs[p], d.secureBoot)
			d.mu.Lock()
			d.refused = append(d.refused, r)
			d.mu.Unlock()
			if r.Why != "" {
				d.log("drivers: %s refused: %s: %s", consoleSafe(p), consoleSafe(r.Error), r.Why)
			} else {
				d.log("drivers: %s refused: %s", consoleSafe(p), consoleSafe(r.Error))
			}
		}
		return loaded, fmt.Errorf("%d of %d modules refused; the last: %w", len(files), loaded+len(files), lastErr)
	}
	return loaded, nil
}

func insmod(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	err = kmodule.FileInit(f, moduleParams[moduleName(strings.Split(filepath.Base(path), ".ko")[0])], 0)
	if errors.Is(err, unix.EEXIST) {
		return nil
	}
	return err
}
