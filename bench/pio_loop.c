/* The peer for Vessel's PIO exit cost: the smallest C program that runs a flat real-mode
 * guest on KVM and answers its port I/O exits in a loop. Built by bench/core.ts with gcc
 * at benchmark time. Usage: pio_loop GUEST.bin [irqchip] ; prints "exits=<n> ns=<elapsed>".
 * With "irqchip" the VM has what Vessel's has (the in-kernel irqchip and PIT, the TSS and
 * identity-map addresses), so the kernel's share of an exit is the same on both sides and
 * the difference is the VMM's own. */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv) {
  if (argc != 2 && argc != 3) return 2;
  int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  int vm = ioctl(kvm, KVM_CREATE_VM, 0);
  if (kvm < 0 || vm < 0) { perror("kvm"); return 1; }
  size_t memsz = 1 << 20;
  unsigned char *mem = mmap(NULL, memsz, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  FILE *f = fopen(argv[1], "rb");
  if (!f) { perror("guest"); return 1; }
  fread(mem + 0x1000, 1, memsz - 0x1000, f);
  fclose(f);
  struct kvm_userspace_memory_region region = { .slot = 0, .guest_phys_addr = 0, .memory_size = memsz, .userspace_addr = (unsigned long)mem };
  ioctl(vm, KVM_SET_USER_MEMORY_REGION, &region);
  if (argc == 3 && strcmp(argv[2], "irqchip") == 0) {
    unsigned long long identity = 0xfffbc000ULL;
    struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
    if (ioctl(vm, KVM_SET_TSS_ADDR, 0xfffbd000UL) < 0 ||
        ioctl(vm, KVM_SET_IDENTITY_MAP_ADDR, &identity) < 0 ||
        ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0 || ioctl(vm, KVM_CREATE_PIT2, &pit) < 0) {
      perror("irqchip");
      return 1;
    }
  }
  int vcpu = ioctl(vm, KVM_CREATE_VCPU, 0);
  int runsz = ioctl(kvm, KVM_GET_VCPU_MMAP_SIZE, 0);
  struct kvm_run *run = mmap(NULL, runsz, PROT_READ | PROT_WRITE, MAP_SHARED, vcpu, 0);
  struct kvm_sregs sregs;
  ioctl(vcpu, KVM_GET_SREGS, &sregs);
  sregs.cs.base = 0; sregs.cs.selector = 0;
  ioctl(vcpu, KVM_SET_SREGS, &sregs);
  struct kvm_regs regs; memset(&regs, 0, sizeof regs);
  regs.rip = 0x1000; regs.rflags = 2;
  ioctl(vcpu, KVM_SET_REGS, &regs);
  struct timespec t0, t1;
  long exits = 0;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (;;) {
    if (ioctl(vcpu, KVM_RUN, 0) < 0) { perror("KVM_RUN"); return 1; }
    if (run->exit_reason != KVM_EXIT_IO) { fprintf(stderr, "exit %d\n", run->exit_reason); return 1; }
    exits++;
    if (run->io.port == 0x600) break;
  }
  clock_gettime(CLOCK_MONOTONIC, &t1);
  printf("exits=%ld ns=%ld\n", exits, (t1.tv_sec - t0.tv_sec) * 1000000000L + (t1.tv_nsec - t0.tv_nsec));
  return 0;
}
