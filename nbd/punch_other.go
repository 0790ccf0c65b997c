//go:build !linux

package nbd

import (
	"errors"
	"os"
)

// punchHole is not available here: callers write zeros instead.
func punchHole(*os.File, int64, int64) error { return errors.ErrUnsupported }
