package main

import (
	"strconv"

	"github.com/rewind-bmr/rewind/internal/units"
)

// byteSize is a pflag.Value for sizes like "4MiB", "1GiB", "512k" or "4096".
type byteSize int64

func (b *byteSize) String() string { return strconv.FormatInt(int64(*b), 10) }
func (b *byteSize) Type() string   { return "size" }

func (b *byteSize) Set(s string) error {
	n, err := units.ParseSize(s)
	if err != nil {
		return err
	}
	*b = byteSize(n)
	return nil
}
