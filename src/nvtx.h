// nvtx.h: (being written)
#pragma once
