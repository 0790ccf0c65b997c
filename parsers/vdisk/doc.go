// Package vdisk reads and writes virtual disk container formats (VHD,
// VHDX, VMDK, qcow2) and synthesizes cheap read-only VHD and VMDK views of a
// raw disk. Readers expose the virtual disk as an io.ReaderAt over an
// io.ReaderAt of the container; they check every size field before
// allocating, report errors with the byte offset that failed, and never
// panic on malformed input.
package vdisk
