package mdf

import "fmt"

// decodeBinaryXML decodes SQL Server's binary XML storage format.
func decodeBinaryXML(b []byte) (string, error) {
	return "", fmt.Errorf("%w: binary XML not decoded", ErrFormat)
}
