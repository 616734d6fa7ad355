package postgres

import "testing"

func TestMaskURLForms(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://u:p@ss@h:5432/db":                     "postgres://u:xxxxx@h:5432/db",
		"dial postgres://u:secret@h/db failed":            "dial postgres://u:xxxxx@h/db failed",
		"postgres://u@h/db":                               "postgres://u@h/db",
		"postgres://h/db?sslmode=require&password=secret": "postgres://h/db?sslmode=require&password=xxxxx",
		"host=h user=u password=secret dbname=d":          "host=h user=u password=xxxxx dbname=d",
		"host=h password='s e\\'c' dbname=d":              "host=h password=xxxxx dbname=d",
		"postgresql://a:b@h1/x and postgres://c:d@h2/y":   "postgresql://a:xxxxx@h1/x and postgres://c:xxxxx@h2/y",
	} {
		if got := MaskURL(in); got != want {
			t.Errorf("MaskURL(%q) = %q, want %q", in, got, want)
		}
	}
}
