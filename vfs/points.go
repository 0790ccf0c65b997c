package vfs

import (
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
)

// nameLayout names point directories: RFC 3339 in UTC with milliseconds.
const nameLayout = "2006-01-02T15:04:05.000Z"

// PointNames gives every point of a volume (oldest first, as the catalog
// lists them) its directory name. Names depend only on the point and the
// points before it, so they stay the same while new points arrive: a
// point whose millisecond is taken by an earlier one is named to the
// nanosecond, and one whose nanosecond is taken too gets "~id".
func PointNames(ps []catalog.Point) []string {
	out := make([]string, len(ps))
	seen := make(map[string]bool, len(ps))
	for i, p := range ps {
		n := p.Time.UTC().Format(nameLayout)
		if seen[n] {
			n = p.Time.UTC().Format(time.RFC3339Nano)
		}
		if seen[n] {
			n += "~" + strconv.FormatInt(p.ID, 10)
		}
		seen[n] = true
		out[i] = n
	}
	return out
}

// thin chooses which points a listing shows: every point of the last
// hour, the newest of each minute of the last day, the newest of each
// hour before that, and always the newest point. ps is oldest first; the
// result holds indexes into ps, oldest first.
func thin(ps []catalog.Point, now time.Time) []int {
	var out []int
	hour, day := now.Add(-time.Hour), now.Add(-24*time.Hour)
	bucket := func(t time.Time) int64 {
		switch {
		case !t.Before(hour):
			return -1 // every point
		case !t.Before(day):
			return t.Unix() / 60
		default:
			return -2 - t.Unix()/3600
		}
	}
	for i, p := range ps {
		b := bucket(p.Time)
		if b != -1 && i+1 < len(ps) && bucket(ps[i+1].Time) == b {
			continue // a newer point of the same minute or hour is shown
		}
		out = append(out, i)
	}
	return out
}

var relativeName = regexp.MustCompile(`^-(\d+)([smhdw])$`)

// parseTyped parses a timestamp typed as a path name: RFC 3339
// (2026-11-20T10:15:00Z), "2026-11-20 10:15[:05]" and
// "2026-11-20T10:15[:05]" in loc, a bare date, or a relative time
// ("-15m", "-2h", "-3d", "-1w"); a " UTC" suffix puts a zoneless time in UTC.
func parseTyped(s string, loc *time.Location, now time.Time) (time.Time, bool) {
	if m := relativeName.FindStringSubmatch(s); m != nil {
		n, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil || n > 1<<20 {
			return time.Time{}, false
		}
		unit := map[string]time.Duration{"s": time.Second, "m": time.Minute, "h": time.Hour, "d": 24 * time.Hour, "w": 7 * 24 * time.Hour}[m[2]]
		return now.Add(-time.Duration(n) * unit), true
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, true
	}
	// "2026-11-20T10:15Z" (RFC 3339 without seconds) and other zones.
	for _, layout := range []string{"2006-01-02T15:04Z07:00", "2006-01-02 15:04:05Z07:00", "2006-01-02 15:04Z07:00"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, true
		}
	}
	if u, ok := strings.CutSuffix(s, " UTC"); ok {
		s, loc = u, time.UTC
	}
	for _, layout := range []string{"2006-01-02 15:04:05", "2006-01-02 15:04", "2006-01-02T15:04:05", "2006-01-02T15:04", "2006-01-02", "2006-01-02 15:04:05.999999999", "2006-01-02T15:04:05.999999999"} {
		if t, err := time.ParseInLocation(layout, s, loc); err == nil {
			return t, true
		}
	}
	return time.Time{}, false
}

// atOrBefore returns the index of the newest point at or before t, or -1.
func atOrBefore(ps []catalog.Point, t time.Time) int {
	i := sort.Search(len(ps), func(i int) bool { return ps[i].Time.After(t) })
	return i - 1
}
