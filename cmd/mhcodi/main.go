// Command mhcodi is the sysadmin's tool: it checks the cluster file and
// (as later work lands) starts, stops, fails over and verifies guests.
package main

import (
	"os"

	"github.com/mhcodi/mhcodi/cmd/mhcodi/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
