package main

import "github.com/spf13/cobra"

// newRoot is the errand command, for tests that run it as the shell would.
func newRoot() *cobra.Command {
	root, _ := newRootWithGlobals()
	return root
}
