package vfs

import (
	"testing"
	"time"

	"github.com/rewind-cdp/rewind/catalog"
)

func TestPointNames(t *testing.T) {
	base := time.Date(2026, 11, 20, 10, 15, 3, 250_000_000, time.UTC)
	ps := []catalog.Point{
		{ID: 1, Time: base},
		{ID: 2, Time: base.Add(100 * time.Microsecond)}, // same millisecond
		{ID: 3, Time: base.Add(100 * time.Microsecond)}, // same nanosecond
		{ID: 4, Time: base.Add(time.Second)},
	}
	got := PointNames(ps)
	want := []string{"2026-11-20T10:15:03.250Z", "2026-11-20T10:15:03.2501Z", "2026-11-20T10:15:03.2501Z~3", "2026-11-20T10:15:04.250Z"}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("name %d = %q, want %q", i, got[i], want[i])
		}
	}
	// names stay when points arrive
	if again := PointNames(append(ps, catalog.Point{ID: 5, Time: base.Add(time.Second)})); again[3] != want[3] || again[4] == want[3] {
		t.Errorf("names after a new point: %q", again)
	}
}

func TestThin(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	var ps []catalog.Point
	add := func(t time.Time) { ps = append(ps, catalog.Point{ID: int64(len(ps) + 1), Time: t}) }
	// three days ago: 3 points in one hour, 1 in the next
	add(now.Add(-72*time.Hour + 1*time.Minute))
	add(now.Add(-72*time.Hour + 20*time.Minute))
	add(now.Add(-72*time.Hour + 40*time.Minute))
	add(now.Add(-71*time.Hour + 5*time.Minute))
	// five hours ago: 3 points in one minute, 1 in the next
	add(now.Add(-5*time.Hour + 1*time.Second))
	add(now.Add(-5*time.Hour + 20*time.Second))
	add(now.Add(-5*time.Hour + 40*time.Second))
	add(now.Add(-5*time.Hour + 70*time.Second))
	// the last hour: every point
	for i := 0; i < 5; i++ {
		add(now.Add(-30*time.Minute + time.Duration(i)*time.Second))
	}
	got := thin(ps, now)
	want := []int{2, 3, 6, 7, 8, 9, 10, 11, 12}
	if len(got) != len(want) {
		t.Fatalf("thin = %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("thin = %v, want %v", got, want)
		}
	}
	// the newest point is always shown, however old
	if got := thin(ps[:2], now); len(got) != 1 || got[0] != 1 {
		t.Errorf("thin of two old points = %v, want [1]", got)
	}
}

func TestParseTyped(t *testing.T) {
	now := time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)
	loc := time.FixedZone("X", 2*3600)
	for in, want := range map[string]time.Time{
		"2026-11-20T10:15:00Z":           time.Date(2026, 11, 20, 10, 15, 0, 0, time.UTC),
		"2026-11-20T10:15:00.5Z":         time.Date(2026, 11, 20, 10, 15, 0, 500_000_000, time.UTC),
		"2026-11-20T10:15:00+01:00":      time.Date(2026, 11, 20, 9, 15, 0, 0, time.UTC),
		"2026-11-20T10:15Z":              time.Date(2026, 11, 20, 10, 15, 0, 0, time.UTC),
		"2026-11-20 10:15:07Z":           time.Date(2026, 11, 20, 10, 15, 7, 0, time.UTC),
		"2026-11-20 10:15":               time.Date(2026, 11, 20, 10, 15, 0, 0, loc),
		"2026-11-20 10:15:30":            time.Date(2026, 11, 20, 10, 15, 30, 0, loc),
		"2026-11-20T10:15":               time.Date(2026, 11, 20, 10, 15, 0, 0, loc),
		"2026-11-20":                     time.Date(2026, 11, 20, 0, 0, 0, 0, loc),
		"-15m":                           now.Add(-15 * time.Minute),
		"-2h":                            now.Add(-2 * time.Hour),
		"-3d":                            now.Add(-72 * time.Hour),
		"2026-11-20T10:15:03.250Z":       time.Date(2026, 11, 20, 10, 15, 3, 250_000_000, time.UTC),
		"2026-11-20 10:15:03.123456789":  time.Date(2026, 11, 20, 10, 15, 3, 123456789, loc),
		"2026-11-20 10:15 UTC":           time.Date(2026, 11, 20, 10, 15, 0, 0, time.UTC),
		"2026-11-20T10:15:00.000000001Z": time.Date(2026, 11, 20, 10, 15, 0, 1, time.UTC),
	} {
		got, ok := parseTyped(in, loc, now)
		if !ok || !got.Equal(want) {
			t.Errorf("parseTyped(%q) = %v %v, want %v", in, got, ok, want)
		}
	}
	for _, in := range []string{"latest", "disk.img", "files", "2026-13-01", "-15x", "10:15", "", "-99999999999d"} {
		if got, ok := parseTyped(in, loc, now); ok {
			t.Errorf("parseTyped(%q) = %v, want no time", in, got)
		}
	}
}

func TestAtOrBefore(t *testing.T) {
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ps := []catalog.Point{{Time: base}, {Time: base.Add(time.Second)}, {Time: base.Add(time.Second)}, {Time: base.Add(3 * time.Second)}}
	for _, c := range []struct {
		d    time.Duration
		want int
	}{{-1, -1}, {0, 0}, {999 * time.Millisecond, 0}, {time.Second, 2}, {2 * time.Second, 2}, {3 * time.Second, 3}, {time.Hour, 3}} {
		if got := atOrBefore(ps, base.Add(c.d)); got != c.want {
			t.Errorf("atOrBefore(+%v) = %d, want %d", c.d, got, c.want)
		}
	}
}
