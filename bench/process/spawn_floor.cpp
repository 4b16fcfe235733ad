// The OS floor for spawning: plain posix_spawn + waitpid, no runtime. Written in the C
// subset (the project builds C++ only). Prints `<benchmark> <system> <value> <unit>`.
//
//   spawn_floor [total=2000] [threads=20]
// spawn_true_20_in_flight posix_spawn_seq: one thread, spawn + waitpid in a loop.
// spawn_true_20_in_flight posix_spawn_20threads: `threads` threads each looping.
#include <pthread.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>

extern char** environ;

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int spawn_loop(int n) {
  char arg0[] = "/bin/true";
  char* argv[] = {arg0, NULL};
  int bad = 0;
  for (int i = 0; i < n; ++i) {
    pid_t pid;
    if (posix_spawn(&pid, "/bin/true", NULL, NULL, argv, environ) != 0) {
      ++bad;
      continue;
    }
    int status = 0;
    waitpid(pid, &status, 0);
    bad += !(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  return bad;
}

static void* thread_main(void* arg) {
  return (void*)(long)spawn_loop((int)(long)arg);
}

int main(int argc, char** argv) {
  int total = argc > 1 ? atoi(argv[1]) : 2000;
  int threads = argc > 2 ? atoi(argv[2]) : 20;
  double t0 = now_s();
  int bad = spawn_loop(total);
  double seq = total / (now_s() - t0);

  pthread_t tids[256];
  t0 = now_s();
  for (int i = 0; i < threads; ++i) {
    pthread_create(&tids[i], NULL, thread_main, (void*)(long)(total / threads));
  }
  for (int i = 0; i < threads; ++i) {
    void* r;
    pthread_join(tids[i], &r);
    bad += (int)(long)r;
  }
  double par = (total / threads * threads) / (now_s() - t0);
  if (bad) {
    fprintf(stderr, "spawn_floor: %d failures\n", bad);
  }
  printf("spawn_true_20_in_flight posix_spawn_seq %.0f spawns/s\n", seq);
  printf("spawn_true_20_in_flight posix_spawn_%dthreads %.0f spawns/s\n", threads, par);
  return 0;
}
