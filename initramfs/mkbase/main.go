// Command mkbase builds Rewind's base rescue initramfs with u-root
// ('make initramfs').
package main

import (
	"context"
	"flag"
	"log"

	"github.com/rewind-bmr/rewind/initramfs"
)

func main() {
	out := flag.String("o", "initramfs/"+initramfs.BaseName, "output file (gzip-compressed cpio)")
	root := flag.String("C", ".", "module root")
	flag.Parse()
	if err := initramfs.BuildBase(context.Background(), *root, *out); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %s", *out)
}
