package vfs

// SetMaxOpenAppDBs lowers how many application databases stay open, so
// tests reopen them.
func SetMaxOpenAppDBs(f *FS, n int) {
	f.apps.mu.Lock()
	f.apps.max = n
	f.apps.mu.Unlock()
}
