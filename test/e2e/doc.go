// Package e2e holds the end-to-end tests: the real rewind binary, real
// server processes on loopback, real files and devices.
package e2e
