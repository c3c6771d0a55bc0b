// Lists a .tar.gz with Go's archive/tar (the reader Wings itself uses):
// one line per entry, "<typeflag> <size> <quoted name>", for the interop tests.
package main

import (
	"archive/tar"
	"compress/gzip"
	"fmt"
	"io"
	"os"
)

func main() {
	f, err := os.Open(os.Args[1])
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		n, err := io.Copy(io.Discard, tr)
		if err != nil || n != h.Size {
			fmt.Fprintln(os.Stderr, "short data for", h.Name, err)
			os.Exit(1)
		}
		fmt.Printf("%c %d %q\n", h.Typeflag, h.Size, h.Name)
	}
}
