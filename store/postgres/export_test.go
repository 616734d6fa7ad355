package postgres

// Grants exposes roles.go's table list to the external tests: table, the
// serving role's privileges, the auditor role's.
func Grants() [][3]string {
	out := make([][3]string, len(grants))
	for i, g := range grants {
		out[i] = [3]string{g.table, g.app, g.auditor}
	}
	return out
}
