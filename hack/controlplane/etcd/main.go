// Command etcd is etcd v3.7.0 built from its server module, so that kipam's
// tests need no prebuilt download.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
