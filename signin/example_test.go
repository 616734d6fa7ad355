package signin_test

import (
	"fmt"

	"github.com/errandhq/errand/signin"
)

// Only a path of Errand's own site is a place to go back to after
// signing in.
func ExampleSafeReturnTo() {
	for _, p := range []string{"/ui/tasks/tsk_1", "//evil.example/", "https://evil.example/", "/\\evil.example"} {
		_, ok := signin.SafeReturnTo(p)
		fmt.Println(p, ok)
	}
	// Output:
	// /ui/tasks/tsk_1 true
	// //evil.example/ false
	// https://evil.example/ false
	// /\evil.example false
}
