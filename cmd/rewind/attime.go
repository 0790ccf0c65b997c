package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
)

var relativeAt = regexp.MustCompile(`^-(\d+)([smhdw])$`)

// resolveAt turns a --at value into a point of the volume: RFC 3339,
// "YYYY-MM-DD HH:MM[:SS]" (local time), relative ("-15m", "-2h", "-3d"),
// "latest", or a point id. A time resolves to the newest point at or
// before it.
func resolveAt(ctx context.Context, db *catalog.DB, vol catalog.Volume, at string, now time.Time) (catalog.Point, error) {
	at = strings.TrimSpace(at)
	if at == "" || at == "latest" {
		p, err := db.LatestPoint(ctx, vol.ID)
		if errors.Is(err, catalog.ErrNotFound) {
			return p, fmt.Errorf("%s/%s has no points yet", vol.Machine, vol.Name)
		}
		return p, err
	}
	if id, err := strconv.ParseInt(at, 10, 64); err == nil {
		p, err := db.Point(ctx, id)
		if err != nil {
			return p, fmt.Errorf("point %d: %w", id, err)
		}
		if p.VolumeID != vol.ID {
			return p, fmt.Errorf("point %d belongs to %s/%s, not %s/%s", id, p.Machine, p.Volume, vol.Machine, vol.Name)
		}
		return p, nil
	}
	t, err := parseTime(at, now)
	if err != nil {
		return catalog.Point{}, err
	}
	p, err := db.PointAt(ctx, vol.ID, t)
	if errors.Is(err, catalog.ErrNotFound) {
		return p, fmt.Errorf("%s/%s has no point at or before %s", vol.Machine, vol.Name, t.UTC().Format(time.RFC3339))
	}
	return p, err
}

// parseTime parses the time forms --at takes (a usage error otherwise).
func parseTime(s string, now time.Time) (time.Time, error) {
	if m := relativeAt.FindStringSubmatch(s); m != nil {
		n, _ := strconv.ParseInt(m[1], 10, 64)
		unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		return now.Add(-time.Duration(n) * unit), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02"} {
		if t, err := time.ParseInLocation(layout, s, time.Local); err == nil {
			return t, nil
		}
	}
	return time.Time{}, usagef("--at %q: not a time; use RFC 3339 (2026-11-20T10:15:00Z), \"YYYY-MM-DD HH:MM[:SS]\" (local time), a relative time (-15m, -2h, -3d), latest, or a point id", s)
}

// pointTime formats a point's time as RFC 3339 UTC with nanoseconds.
func pointTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000000Z07:00") }
