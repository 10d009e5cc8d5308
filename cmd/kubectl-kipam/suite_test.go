/*
Copyright 2026 The kipam Authors.

Licensed under the Apache License, Version 2.0 (the "License");
you may not use this file except in compliance with the License.
You may obtain a copy of the License at

    http://www.apache.org/licenses/LICENSE-2.0

Unless required by applicable law or agreed to in writing, software
distributed under the License is distributed on an "AS IS" BASIS,
WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
See the License for the specific language governing permissions and
limitations under the License.
*/

package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/cli-runtime/pkg/genericiooptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"

	capiv1beta2 "github.com/kipam/kipam/api/capi/ipam/v1beta2"
	ipamv1alpha1 "github.com/kipam/kipam/api/v1alpha1"
	"github.com/kipam/kipam/internal/controller"
	"github.com/kipam/kipam/internal/testenv"
	"github.com/kipam/kipam/internal/testenv/kipamtest"
	webhookv1alpha1 "github.com/kipam/kipam/internal/webhook/v1alpha1"
)

// The plugin's commands run here as kubectl runs them (through --kubeconfig)
// against a real API server with kipam running in this process, its
// webhooks and controllers, on a cluster built through kipam.

var update = flag.Bool("update", false, "rewrite the golden files under testdata with what the commands print")

var (
	ctx        context.Context
	cancel     context.CancelFunc
	testEnv    *envtest.Environment
	cfg        *rest.Config
	k8sClient  client.Client
	kubeconfig string
	stopKipam  func()
)

// orphanGrace keeps kipam's sweeps away from the inconsistencies the
// specs make on purpose.
const orphanGrace = 10 * time.Minute

func TestPlugin(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "kubectl kipam Suite")
}

var _ = BeforeSuite(func() {
	SetDefaultEventuallyTimeout(30 * time.Second)
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(false)))
	ctx, cancel = context.WithCancel(context.TODO())

	scheme := runtime.NewScheme()
	Expect(clientgoscheme.AddToScheme(scheme)).To(Succeed())
	Expect(ipamv1alpha1.AddToScheme(scheme)).To(Succeed())
	Expect(capiv1beta2.AddToScheme(scheme)).To(Succeed())

	var err error
	testEnv, err = testenv.New(true)
	Expect(err).NotTo(HaveOccurred())
	cfg, err = testEnv.Start()
	Expect(err).NotTo(HaveOccurred())
	k8sClient, err = client.New(cfg, client.Options{Scheme: scheme})
	Expect(err).NotTo(HaveOccurred())

	// The plugin reads through a kubeconfig file, as kubectl would.
	user, err := testEnv.AddUser(envtest.User{Name: "operator", Groups: []string{"system:masters"}}, nil)
	Expect(err).NotTo(HaveOccurred())
	b, err := user.KubeConfig()
	Expect(err).NotTo(HaveOccurred())
	kubeconfig = filepath.Join(GinkgoT().TempDir(), "kubeconfig")
	Expect(os.WriteFile(kubeconfig, b, 0o600)).To(Succeed())

	stopKipam = startKipam(scheme)
})

var _ = AfterSuite(func() {
	if stopKipam != nil {
		stopKipam()
	}
	cancel()
	if testEnv != nil {
		Expect(testEnv.Stop()).To(Succeed())
	}
})

// startKipam starts kipam in this process and returns a func that stops it.
func startKipam(scheme *runtime.Scheme) (stop func()) {
	GinkgoHelper()
	k, err := kipamtest.Start(ctx, testEnv, cfg, scheme, webhookv1alpha1.SetupWithManager, controller.Options{OrphanGrace: orphanGrace})
	Expect(err).NotTo(HaveOccurred())
	return func() {
		GinkgoHelper()
		Expect(k.Stop()).To(Succeed())
	}
}

// result is what one run of the plugin printed, and its exit status.
type result struct {
	out, err string
	code     int
}

// kipam runs kubectl-kipam with args against the test cluster, on the
// real clock.
func kipam(args ...string) result {
	var out, errOut bytes.Buffer
	code := run(append([]string{"--kubeconfig", kubeconfig}, args...), genericiooptions.IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, time.Now)
	GinkgoWriter.Printf("kubectl kipam %s: exit %d\n%s%s", strings.Join(args, " "), code, out.String(), errOut.String())
	return result{out.String(), errOut.String(), code}
}

// masks replace what changes from run to run (times, ages, uids, entry
// IDs) before output is compared with a golden file.
var masks = []struct {
	re   *regexp.Regexp
	with string
}{
	{regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \([^)]*\)`), "<time>"},
	{regexp.MustCompile(`committed [0-9hms.]+ ago`), "committed <age> ago"},
	{regexp.MustCompile(`entry "[^"]*"`), `entry "<id>"`},
	{regexp.MustCompile(`entry [0-9a-z-]{13,36} of`), "entry <id> of"},
	{regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`), "<uid>"},
}

func mask(s string) string {
	for _, m := range masks {
		s = m.re.ReplaceAllString(s, m.with)
	}
	return s
}

// expectGolden compares got, masked, with testdata/<name>.golden, or
// rewrites the file with -update.
func expectGolden(name, got string) {
	GinkgoHelper()
	path := filepath.Join("testdata", name+".golden")
	got = mask(got)
	if *update {
		Expect(os.MkdirAll("testdata", 0o755)).To(Succeed())
		Expect(os.WriteFile(path, []byte(got), 0o644)).To(Succeed())
		return
	}
	want, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred(), "no golden file: run go test ./cmd/kubectl-kipam -args -update")
	Expect(got).To(Equal(string(want)), "%s differs from %s (go test ./cmd/kubectl-kipam -args -update rewrites it)", name, path)
}
