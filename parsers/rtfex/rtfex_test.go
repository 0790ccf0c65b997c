package rtfex

import "testing"

// Encapsulated HTML built after the rules of [MS-OXRTFEX] 2.1.3: HTML
// markup in {\*\htmltag} destinations, text outside them, RTF-only
// content between \htmlrtf and \htmlrtf0.
const encapsulated = `{\rtf1\ansi\ansicpg1252\fromhtml1 \deff0{\fonttbl
{\f0\fswiss Arial;}}
{\colortbl\red0\green0\blue0;}
{\*\htmltag19 <html>}{\*\htmltag34 <body>}
\htmlrtf {\htmlrtf0 Hello \'e9t\'e9 \{x\}{\*\htmltag84 <br>}\htmlrtf \par
\htmlrtf0 world}
{\*\htmltag27 </body>}{\*\htmltag27 </html>}}`

func TestHTML(t *testing.T) {
	got, ok := HTML([]byte(encapsulated))
	want := "<html><body>Hello été {x}<br>world</body></html>"
	if !ok || got != want {
		t.Fatalf("got %q (%v), want %q", got, ok, want)
	}
	if _, ok := HTML([]byte(`{\rtf1\ansi hello}`)); ok {
		t.Fatal("plain RTF reported as encapsulated HTML")
	}
}

func TestText(t *testing.T) {
	cases := map[string]string{
		`{\rtf1\ansi{\fonttbl{\f0 Arial;}}{\colortbl;\red0\green0\blue0;}\pard Hello\par World\tab!\u8364?}`: "Hello\r\nWorld\t!€",
		// The decompressed text of [MS-OXRTFCP] 4.1.
		"{\\rtf1\\ansi\\ansicpg1252\\pard hello world}\r\n":                          "hello world",
		`{\rtf1{\*\generator Riched20;}\uc1 caf\u233?\line x\ldblquote y\rdblquote}`: "café\r\nx“y”",
		`{\rtf1 \u-10179?\u-8704? smile}`:                                            "😀 smile",
	}
	for in, want := range cases {
		if got := Text([]byte(in)); got != want {
			t.Errorf("%s: got %q, want %q", in, got, want)
		}
	}
}

func FuzzRTF(f *testing.F) {
	f.Add([]byte(encapsulated))
	f.Add([]byte(`{\rtf1\ansi\pard Hello\par World\u8364?}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = HTML(b)
		_ = Text(b)
	})
}
