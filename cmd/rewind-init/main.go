// Command rewind-init is the first program of Rewind's rescue environment
// (/init in the initramfs). It runs the rescue flow of package rescue and
// never returns: the machine reboots, powers off, or stays in the shell.
package main

import "github.com/rewind-bmr/rewind/rescue"

func main() {
	rescue.Main()
}
