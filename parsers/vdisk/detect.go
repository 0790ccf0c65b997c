package vdisk

import (
	"bytes"
	"encoding/binary"
	"io"
)

// Format names a container format.
type Format string

// Formats recognised by Detect.
const (
	FormatUnknown        Format = ""
	FormatVHD            Format = "vhd"             // fixed or dynamic
	FormatVHDX           Format = "vhdx"            // "vhdxfile" identifier
	FormatVMDKSparse     Format = "vmdk"            // "KDMV" sparse extent
	FormatVMDKDescriptor Format = "vmdk-descriptor" // text descriptor
	FormatQcow2          Format = "qcow2"
)

// Detect recognises a container by its magic: qcow2, VHDX, sparse VMDK
// and dynamic VHD at offset 0, a VMDK text descriptor at offset 0, and a
// fixed VHD by its footer in the last 512 bytes. Anything else is
// FormatUnknown (a raw disk, most likely).
func Detect(r io.ReaderAt, size int64) (Format, error) {
	head := make([]byte, 512)
	n, err := r.ReadAt(head, 0)
	if n < len(head) && err != nil && err != io.EOF {
		return FormatUnknown, ioErr("detect", 0, "reading first sector", err)
	}
	head = head[:n]
	switch {
	case len(head) >= 4 && binary.BigEndian.Uint32(head) == qcowMagic:
		return FormatQcow2, nil
	case bytes.HasPrefix(head, []byte("vhdxfile")):
		return FormatVHDX, nil
	case len(head) >= 4 && binary.LittleEndian.Uint32(head) == vmdkMagic:
		return FormatVMDKSparse, nil
	case bytes.HasPrefix(head, []byte("conectix")):
		return FormatVHD, nil
	case bytes.HasPrefix(head, []byte("# Disk DescriptorFile")):
		return FormatVMDKDescriptor, nil
	}
	if size >= 1024 {
		tail := make([]byte, 8)
		if err := readAt("detect", r, tail, size-512, "last sector"); err != nil {
			return FormatUnknown, err
		}
		if string(tail) == "conectix" {
			return FormatVHD, nil
		}
	}
	return FormatUnknown, nil
}

// Disk is an opened virtual disk.
type Disk interface {
	io.ReaderAt
	Size() int64
}

// Open detects the format of a single-file container and opens it. A VMDK
// text descriptor needs its extents: use OpenVMDKDescriptor.
func Open(r io.ReaderAt, size int64) (Disk, Format, error) {
	f, err := Detect(r, size)
	if err != nil {
		return nil, f, err
	}
	var d Disk
	switch f {
	case FormatQcow2:
		d, err = OpenQcow2(r, size)
	case FormatVHDX:
		d, err = OpenVHDX(r, size)
	case FormatVMDKSparse:
		d, err = OpenVMDKSparse(r, size)
	case FormatVHD:
		d, err = OpenVHD(r, size)
	case FormatVMDKDescriptor:
		err = unsupported("vmdk", 0, "text descriptor: open it with OpenVMDKDescriptor and an extent opener")
	default:
		err = corrupt("detect", 0, "no known virtual disk magic")
	}
	if err != nil {
		return nil, f, err
	}
	return d, f, nil
}
